//! Human output: tables for sync and status, progress bars on a terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use engine::progress::{Progress, ProgressEvent};
use engine::{OrgOutcome, OrgStatusView, SecretsHealth, SyncReport};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use vault::{Org, OrgStatus};

/// One spinner per org with running counts.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, OrgBar>>>,
}

/// One org's spinner and the counts it shows.
struct OrgBar {
    bar: ProgressBar,
    tasks: u64,
    archived: u64,
    bytes: u64,
    failed: u64,
}

impl Bars {
    pub fn new() -> Arc<Bars> {
        Arc::new(Bars {
            multi: MultiProgress::new(),
            bars: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.bar.finish();
            }
        }
    }
}

impl Progress for Bars {
    fn event(&self, org: &str, event: ProgressEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let entry = bars.entry(org.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(org.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            OrgBar {
                bar,
                tasks: 0,
                archived: 0,
                bytes: 0,
                failed: 0,
            }
        });
        match event {
            ProgressEvent::TasksListed(n) => entry.tasks += n,
            ProgressEvent::Archived(b) => {
                entry.archived += 1;
                entry.bytes += b;
            }
            ProgressEvent::Failed => entry.failed += 1,
        }
        entry.bar.set_message(format!(
            "{} tasks, {} archived ({}), {} failed",
            entry.tasks,
            entry.archived,
            human_bytes(entry.bytes),
            entry.failed
        ));
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|s| (*s).to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn print_sync_report(report: &SyncReport) {
    let outcome = |o: &OrgOutcome| -> String {
        match o {
            OrgOutcome::Ok => "ok".into(),
            OrgOutcome::NeedsReauth(_) => "NEEDS REAUTH".into(),
            OrgOutcome::Failed(_) => "FAILED".into(),
            OrgOutcome::Skipped(_) => "skipped".into(),
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for o in &report.orgs {
        rows.push(vec![
            o.org.clone(),
            outcome(&o.outcome),
            o.tasks_seen.to_string(),
            o.archived.to_string(),
            human_bytes(o.bytes),
            o.already_archived.to_string(),
            o.pending_capture.to_string(),
            o.absent.to_string(),
            o.missing.len().to_string(),
            (o.failed.len() as u64 + o.transient_left).to_string(),
            o.api_calls.to_string(),
        ]);
        // One line per source when the org has several, so both are visible side by side.
        // One line per source unless the org has only Contact Center (the org's line says it all).
        if o.sources.len() > 1 || o.sources.iter().any(|s| s.source != "wxcc") {
            for s in &o.sources {
                rows.push(vec![
                    format!("  {}", s.source),
                    outcome(&s.outcome),
                    "-".into(),
                    s.archived.to_string(),
                    human_bytes(s.bytes),
                    s.already_archived.to_string(),
                    "-".into(),
                    s.absent.to_string(),
                    "-".into(),
                    (s.failed + s.transient_left).to_string(),
                    s.api_calls.to_string(),
                ]);
            }
        }
    }
    table(
        &[
            "org",
            "result",
            "tasks",
            "archived",
            "bytes",
            "already",
            "pending",
            "absent",
            "missing",
            "failed",
            "api calls",
        ],
        &rows,
    );
    for o in &report.orgs {
        if !o.window_from.is_empty() {
            println!("{}: window [{} , {})", o.org, o.window_from, o.window_to);
        }
        match &o.outcome {
            OrgOutcome::Ok => {}
            OrgOutcome::NeedsReauth(r) => println!("{}: needs re-authorization: {r}", o.org),
            OrgOutcome::Failed(r) => println!("{}: failed: {r}", o.org),
            // Already one full sentence naming the org, the other process and until when.
            OrgOutcome::Skipped(r) => println!("{r}"),
        }
        for m in &o.missing {
            println!("{}: missing {m}", o.org);
        }
        for f in &o.failed {
            println!("{}: failed {f}", o.org);
        }
        if o.transient_left > 0 {
            println!(
                "{}: {} item(s) hit transient errors and will be retried on the next run",
                o.org, o.transient_left
            );
        }
        if o.malformed > 0 {
            println!(
                "{}: {} item(s) in Webex responses could not be read (see the log)",
                o.org, o.malformed
            );
        }
        if o.awaiting_metadata > 0 {
            println!(
                "{}: {} recording(s) archived as audio; their sidecars wait for Webex's metadata (retried on the next runs)",
                o.org, o.awaiting_metadata
            );
        }
        if o.outside_window > 0 {
            println!(
                "{}: {} listed item(s) outside the requested window or filters were dropped",
                o.org, o.outside_window
            );
        }
        let earlier: Vec<&String> = o
            .window_problem_items
            .iter()
            .filter(|i| {
                !o.failed
                    .iter()
                    .chain(&o.missing)
                    .any(|f| i.contains(f.as_str()))
            })
            .collect();
        if o.window_problems > 0 {
            println!(
                "{}: {} item(s) of this window are failed or missing; `wxvault retry --org {}` puts failed ones back for the next sync",
                o.org, o.window_problems, o.org
            );
            for item in earlier {
                println!("{}:   {item}", o.org);
            }
        }
    }
}

fn ago(now_ms: i64, at: Option<i64>) -> String {
    match at {
        None => "-".into(),
        Some(t) => {
            let d = (t - now_ms) / 1000;
            let (sign, d) = if d < 0 { ("-", -d) } else { ("", d) };
            if d >= 86_400 {
                format!("{sign}{}d", d / 86_400)
            } else if d >= 3600 {
                format!("{sign}{}h", d / 3600)
            } else {
                format!("{sign}{}m", d / 60)
            }
        }
    }
}

pub fn print_orgs(orgs: &[Org]) {
    let rows: Vec<Vec<String>> = orgs
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                o.org_id.clone(),
                o.region.clone(),
                o.client_id.clone(),
                engine::sync::org_sources(o).join(","),
                match &o.status {
                    OrgStatus::Active => "active".into(),
                    OrgStatus::NeedsReauth { .. } => "needs_reauth".into(),
                },
            ]
        })
        .collect();
    table(
        &["org", "org id", "region", "client id", "sources", "status"],
        &rows,
    );
}

pub fn print_status(views: &[OrgStatusView], now_ms: i64) {
    if views.is_empty() {
        println!("no orgs yet: add one with `wxvault org add`, or try `wxvault demo`");
        return;
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for v in views {
        rows.push(vec![
            v.org.name.clone(),
            match (&v.secrets, &v.org.status) {
                (SecretsHealth::Unreadable { .. }, _) => "SECRETS UNREADABLE".into(),
                (_, OrgStatus::Active) => "active".into(),
                (_, OrgStatus::NeedsReauth { .. }) => "NEEDS REAUTH".into(),
            },
            ago(now_ms, v.org.access_expires_at_ms),
            ago(now_ms, v.org.refresh_expires_at_ms),
            v.last_window_end.clone().unwrap_or_else(|| "-".into()),
            v.counts.archived.to_string(),
            (v.counts.in_progress + v.counts.pending_capture).to_string(),
            (v.counts.absent + v.counts.recordings_absent).to_string(),
            v.counts.capture_never_requested.to_string(),
            v.counts.missing.to_string(),
            v.counts.failed.to_string(),
        ]);
        if v.sources.len() > 1 || v.sources.iter().any(|s| s.source != "wxcc") {
            for s in &v.sources {
                rows.push(vec![
                    format!("  {}{}", s.source, if s.enabled { "" } else { " (off)" }),
                    String::new(),
                    String::new(),
                    String::new(),
                    s.last_window_end.clone().unwrap_or_else(|| "-".into()),
                    s.counts.archived.to_string(),
                    (s.counts.in_progress + s.counts.pending_capture).to_string(),
                    (s.counts.absent + s.counts.recordings_absent).to_string(),
                    s.counts.capture_never_requested.to_string(),
                    s.counts.missing.to_string(),
                    s.counts.failed.to_string(),
                ]);
            }
        }
    }
    table(
        &[
            "org",
            "token",
            "access expires",
            "refresh expires",
            "synced up to",
            "archived",
            "pending",
            "absent",
            "never requested",
            "missing",
            "failed",
        ],
        &rows,
    );
    for v in views {
        if let SecretsHealth::Unreadable { reason } = &v.secrets {
            println!("{}: {reason}", v.org.name);
        }
        if let OrgStatus::NeedsReauth { reason } = &v.org.status {
            println!("{}: needs re-authorization: {reason}", v.org.name);
        }
        for f in &v.failures {
            println!("{}: {} {} — {}", v.org.name, f.state, f.item, f.reason);
        }
    }
}

/// The work queue (`wxvault queue`, and the end of `wxvault status`).
pub fn print_queue(view: &engine::queue::QueueView, now_ms: i64) {
    let q = &view.queue;
    let name = |id: i64| {
        view.org_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("org #{id}"))
    };
    println!(
        "queue: {} queued ({} due now), {} running{}, {} failed, {} done (kept 7 days)",
        q.queued,
        q.due,
        q.running,
        if q.expired > 0 {
            format!(" ({} with an expired lease)", q.expired)
        } else {
            String::new()
        },
        q.failed,
        q.done
    );
    for p in &q.in_flight {
        println!(
            "  in flight: {} job(s) on {} pid {} (lease until {})",
            p.jobs,
            p.host,
            p.pid,
            engine::clock::rfc3339(p.lease_expires_ms)
        );
    }
    for j in &q.open_jobs {
        let state = match (&j.host, j.pid) {
            (Some(host), Some(pid)) if j.state == "running" => {
                format!("running on {host} pid {pid}")
            }
            _ if j.next_attempt_ms > now_ms => {
                format!("queued, due in {}", ago(now_ms, Some(j.next_attempt_ms)))
            }
            _ => j.state.clone(),
        };
        println!(
            "  job {} ({} of {}, {}): {state}",
            j.id,
            j.kind,
            name(j.org),
            engine::queue::window_text(j)
        );
    }
    for l in &view.leases {
        println!(
            "  lease: org {} ({}) held by {} pid {}, expires in {}",
            l.org,
            l.lease.scope,
            l.lease.host,
            l.lease.pid,
            ago(now_ms, Some(l.lease.expires_at_ms))
        );
    }
    match &view.planner {
        Some(p) => {
            let holder = match (&p.host, p.pid, p.expires_at_ms) {
                (Some(h), Some(pid), Some(exp)) if exp > now_ms => format!("held by {h} pid {pid}"),
                _ => "not held".into(),
            };
            println!(
                "planner: {holder}; last run {}{}",
                p.last_run_ms
                    .map_or_else(|| "never".into(), engine::clock::rfc3339),
                p.last_summary
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            if let Some(r) = p.last_rescan_ms {
                println!("planner: last rescan {}", engine::clock::rfc3339(r));
            }
        }
        None => println!("planner: never ran (start `wxvault serve` or `wxvault worker --plan`)"),
    }
    for j in &q.failed_jobs {
        println!(
            "  failed job {} ({} of {}, {} attempt(s)): {}",
            j.id,
            j.kind,
            name(j.org),
            j.attempts,
            j.last_error.as_deref().unwrap_or("no reason recorded")
        );
    }
}
