//! One process per org at a time: the org's run holds a lease in the state database.
//!
//! Two `sync` processes on one database would otherwise both list, download and store every
//! recording of the same org. Before an org's run starts, its `sync` lease is taken for
//! `[sync] lease_ttl_secs`; a heartbeat renews it every `[sync] lease_renew_secs` while the run goes
//! on, and it is deleted when the run ends, also after an error. A second process finds it held
//! and skips the org with one line naming the holder (host, pid) and the expiry; the org did not
//! fail, so the skip alone does not change the exit code. A holder killed with `kill -9` stops
//! renewing, and its lease can be taken over once it has expired — at once when it ran in this
//! process's pid namespace of this boot and its pid is gone, so a resume right after a crash
//! goes on.
//!
//! If a renewal finds the lease taken over (this process was paused past the expiry and another
//! took it), the org's harvest is told to stop: no new listing window, captures batch or window
//! record starts; downloads already in flight finish (their objects are create-only and the ledger
//! never moves backwards, so the new holder adopts them). The org's report then says what
//! happened. The run is not cancelled mid-await, because a token refresh in flight must be
//! persisted before it is dropped (webex-api.md §1.5).
//!
//! Lease times come from the engine's clock (the simulator's in tests); heartbeats run on tokio
//! time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use vault::{Lease, LeaseAcquire, LeaseHolder, LeaseRenewal, Org, Vault};

use crate::clock::SharedClock;
use crate::clock::rfc3339;
use crate::report::{OrgOutcome, OrgReport};
use crate::sync::Engine;

/// The lease scope of an org's harvests and rescans (`sync`, the planner's jobs).
pub const SYNC_SCOPE: &str = "sync";

/// The lease scope of the backfill chunk of an org that starts at `from_ms`: chunks cover
/// disjoint windows, so they do not exclude each other (nor the org's regular harvest, which
/// starts after the newest chunk), yet each run still holds a lease that fences a process paused
/// past it, and a second run of the same chunk is skipped.
pub fn backfill_scope(from_ms: i64) -> String {
    format!("backfill:{from_ms}")
}

/// Event kind recorded when a run loses its lease.
pub const LEASE_LOST_EVENT: &str = "sync_lease_lost";

/// The holder identity of one org's run: random, plus host name and pid for the message another
/// process shows.
pub fn holder_for_this_run() -> LeaseHolder {
    let random = uuid::Uuid::new_v4().to_string();
    LeaseHolder {
        // The machine boot and pid namespace ride along, so a process can tell that a lease's
        // holder ran where its own process table can vouch for it (see `holder_is_dead`).
        id: match process_space() {
            Some(space) => format!("{random}@{space}"),
            None => random,
        },
        host: whoami::fallible::hostname().unwrap_or_else(|_| "unknown host".into()),
        pid: i64::from(std::process::id()),
    }
}

/// The line shown for an org skipped because `lease` is held by another process.
pub fn skipped_message(org: &str, lease: &Lease) -> String {
    format!(
        "org {org} is being synced by another wxvault process (host {}, pid {}) until {}; skipped",
        lease.host,
        lease.pid,
        rfc3339(lease.expires_at_ms)
    )
}

/// Handed to an org's run while it holds the lease: tells it when the lease was lost.
#[derive(Clone, Default)]
pub struct OrgLease {
    inner: Arc<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// Why the lease was lost; `None` while it is held.
    lost: Mutex<Option<String>>,
    /// Stop flags to raise when it is lost (the harvest's).
    stops: Mutex<Vec<Arc<AtomicBool>>>,
}

impl OrgLease {
    /// Raises `flag` when the lease is lost — at once if it already was.
    pub fn stop_on_loss(&self, flag: Arc<AtomicBool>) {
        let lost = self.lost().is_some();
        if lost {
            flag.store(true, Ordering::SeqCst);
        }
        if let Ok(mut stops) = self.inner.stops.lock() {
            stops.push(flag);
        }
        // A loss between the check and the push raised every flag registered by then; raise
        // this one too.
        if !lost && self.lost().is_some() {
            self.raise_stops();
        }
    }

    /// Why the lease was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.inner.lost.lock().ok().and_then(|l| l.clone())
    }

    fn mark_lost(&self, why: String) {
        if let Ok(mut lost) = self.inner.lost.lock() {
            lost.get_or_insert(why);
        }
        self.raise_stops();
    }

    fn raise_stops(&self) {
        if let Ok(stops) = self.inner.stops.lock() {
            for s in stops.iter() {
                s.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Runs `run` for `org` while holding the org's `scope` lease ([`SYNC_SCOPE`], or a backfill
/// chunk's [`backfill_scope`]); skips the org when another process holds it. Never fails: every
/// problem ends up in the org's report.
pub(crate) async fn run_leased<F, Fut>(
    engine: &Engine,
    org: Org,
    scope: &str,
    holder: LeaseHolder,
    run: F,
) -> OrgReport
where
    F: FnOnce(Org, OrgLease) -> Fut,
    Fut: Future<Output = OrgReport>,
{
    let ttl_ms = i64::try_from(engine.config.sync.lease_ttl_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let renew_every = Duration::from_secs(engine.config.sync.lease_renew_secs);
    let unstarted = |outcome| OrgReport {
        org: org.name.clone(),
        org_id: org.org_id.clone(),
        outcome,
        ..OrgReport::default()
    };
    let taken = engine
        .vault
        .acquire_lease(&org, scope, &holder, engine.clock.now_ms(), ttl_ms)
        .await;
    let expires_at_ms = match taken {
        Ok(LeaseAcquire::Acquired(l)) => l.expires_at_ms,
        Ok(LeaseAcquire::Busy(l)) if holder_is_dead(&l, &holder) => {
            // Killed (kill -9, OOM, power) on this very host: its lease would block every run
            // until it expired, so a resume right after a crash would skip the org.
            match engine
                .vault
                .take_over_lease(
                    &org,
                    scope,
                    &l.holder,
                    &holder,
                    engine.clock.now_ms(),
                    ttl_ms,
                )
                .await
            {
                Ok(Some(taken)) => {
                    tracing::info!(
                        org = %org.name,
                        "took over the sync lease of pid {}, which no longer runs on this host",
                        l.pid
                    );
                    taken.expires_at_ms
                }
                Ok(None) => {
                    let msg = format!(
                        "org {} is being synced by another wxvault process (it took the lease of a process that had died); skipped",
                        org.name
                    );
                    return unstarted(OrgOutcome::Skipped(msg));
                }
                Err(e) => {
                    let mut r = unstarted(OrgOutcome::Failed(format!(
                        "org {}: cannot take its {scope} lease: {e}",
                        org.name
                    )));
                    r.error_class = Some(vault_class(&e));
                    return r;
                }
            }
        }
        Ok(LeaseAcquire::Busy(l)) => {
            let msg = skipped_message(&org.name, &l);
            tracing::info!("{msg}");
            return unstarted(OrgOutcome::Skipped(msg));
        }
        Err(e) => {
            let mut r = unstarted(OrgOutcome::Failed(format!(
                "org {}: cannot take its {scope} lease: {e}",
                org.name
            )));
            r.error_class = Some(vault_class(&e));
            return r;
        }
    };
    let lease = OrgLease::default();
    let (stop_tx, stop_rx) = oneshot::channel();
    let heartbeat = tokio::spawn(heartbeat(
        Heartbeat {
            vault: engine.vault.clone(),
            clock: engine.clock.clone(),
            org: org.clone(),
            scope: scope.to_owned(),
            holder: holder.clone(),
            ttl_ms,
            renew_every,
            expires_at_ms,
            lease: lease.clone(),
        },
        stop_rx,
    ));
    let mut report = run(org.clone(), lease.clone()).await;
    // Stop renewing between statements rather than aborting one mid-flight.
    let _ = stop_tx.send(());
    if let Err(e) = heartbeat.await {
        tracing::warn!(org = %org.name, "sync lease heartbeat ended abnormally: {e}");
    }
    if let Some(why) = lease.lost() {
        report.outcome = OrgOutcome::Failed(why);
        // Another process carries on, or the next run does: nothing is wrong with the org.
        report.error_class = Some(webex::ErrorClass::Transient);
        return report;
    }
    match engine.vault.release_lease(&org, scope, &holder.id).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            org = %org.name,
            "the sync lease was taken over by another process before this run released it"
        ),
        Err(e) => tracing::warn!(
            org = %org.name,
            "could not release the sync lease ({e}); other processes can take it once it expires"
        ),
    }
    report
}

/// The class of a state-database error met while taking a lease.
fn vault_class(e: &vault::VaultError) -> webex::ErrorClass {
    if e.is_transient() {
        webex::ErrorClass::Transient
    } else {
        webex::ErrorClass::Permanent
    }
}

/// This boot of this machine and this process's pid namespace (`boot_id/pid:[inode]`), when
/// `/proc` tells them.
fn process_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// True when `lease` was taken by a process that no longer runs and that ran in this process's
/// own pid namespace of this boot (its holder id says so): only then can this process table
/// vouch for it. Containers sharing a host name but not a pid namespace, other hosts, and
/// systems without `/proc` wait for the lease to expire.
fn holder_is_dead(lease: &Lease, me: &LeaseHolder) -> bool {
    let Some(space) = process_space() else {
        return false;
    };
    if lease.host != me.host
        || lease.pid == me.pid
        || lease.pid <= 0
        || !lease.holder.ends_with(&format!("@{space}"))
    {
        return false;
    }
    !std::path::Path::new("/proc")
        .join(lease.pid.to_string())
        .exists()
}

/// What the heartbeat task needs.
struct Heartbeat {
    vault: Vault,
    clock: SharedClock,
    org: Org,
    scope: String,
    holder: LeaseHolder,
    ttl_ms: i64,
    renew_every: Duration,
    expires_at_ms: i64,
    lease: OrgLease,
}

/// Renews the lease every `renew_every` until told to stop, or until the lease is lost: taken
/// over by another process, or not renewable (database errors) before it expired.
async fn heartbeat(mut hb: Heartbeat, mut stop: oneshot::Receiver<()>) {
    let start = tokio::time::Instant::now() + hb.renew_every;
    let mut ticks = tokio::time::interval_at(start, hb.renew_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let now = hb.clock.now_ms();
        let why = match hb
            .vault
            .renew_lease(&hb.org, &hb.scope, &hb.holder.id, now, hb.ttl_ms)
            .await
        {
            Ok(LeaseRenewal::Renewed { expires_at_ms }) => {
                hb.expires_at_ms = expires_at_ms;
                continue;
            }
            Ok(LeaseRenewal::Lost(current)) => {
                let by = match current {
                    Some(l) => format!(
                        "another wxvault process (host {}, pid {}) holds it until {}",
                        l.host,
                        l.pid,
                        rfc3339(l.expires_at_ms)
                    ),
                    None => "its row was removed".into(),
                };
                format!(
                    "org {}: this run lost its {} lease ({by}; this process was probably paused past {}); \
                     stopped the org's run before it started more work — the other process carries on, \
                     or the next sync does",
                    hb.org.name,
                    hb.scope,
                    rfc3339(hb.expires_at_ms)
                )
            }
            Err(e) if now < hb.expires_at_ms => {
                tracing::warn!(org = %hb.org.name, "could not renew the sync lease, will retry: {e}");
                continue;
            }
            Err(e) => format!(
                "org {}: could not renew its {} lease before it expired at {} ({e}); stopped the \
                 org's run so that another process may take it over — check [database] url",
                hb.org.name,
                hb.scope,
                rfc3339(hb.expires_at_ms)
            ),
        };
        tracing::error!("{why}");
        hb.lease.mark_lost(why.clone());
        let _ = hb
            .vault
            .record_event(Some(&hb.org), LEASE_LOST_EVENT, &why)
            .await;
        return;
    }
}
