//! Backfill chunks: one org's long catch-up spread over many workers.
//!
//! An org's harvests share the org's lane, so a new contact center with years of history, or an
//! org that was off for weeks, would be harvested by one process while the others idle. When the
//! window an org's jobs would cover is longer than two `[schedule] backfill_chunk_days`, it is
//! queued instead as one `backfill` job per chunk: an explicit `[from, to)`, a lane of its own
//! (`org:<id>/<from>`) and an org lease of its own (`backfill:<from>`), so chunks run side by side
//! on different workers, and each run is still fenced if its process pauses past the lease.
//!
//! The cursor stays right whatever order chunks finish in: a chunk that ends before the chunk
//! ahead of it records its windows *ahead* of the cursor (vault `windows`), and they are put in
//! line the moment the windows before them are. A chunk that fails leaves the cursor before it, so
//! the next plan harvests that period again. For an org whose sources have no cursor yet, an
//! empty window at the backfill's start anchors the cursor there (otherwise the first chunk to
//! finish, whichever it is, would set it).
//!
//! While an org has chunks queued or running, its regular harvest starts where harvesting reaches
//! without a gap from the end of the newest open chunk (see `vault::Vault::windows_reach`), never
//! at the cursor: new recordings keep being archived during a long backfill, and no period is
//! listed twice or skipped.

use vault::{KIND_BACKFILL, KIND_HARVEST, NewJob, Org};

use crate::error::EngineError;
use crate::report::{OrgOutcome, OrgReport, SourceReport};
use crate::sync::{Engine, SETTLE_LAG_MS, org_sources};

/// Problem items a merged report lists at most (as one job's report does).
const PROBLEMS_LISTED: usize = 20;

/// The jobs that harvest `org` over `[from_ms, to_ms)` (each bound optional, as in
/// [`crate::SyncOptions`]): one harvest, or backfill chunks when the window is longer than two
/// chunks. With no `from_ms`, the window starts at the org's oldest source cursor (or `[sync]
/// first_lookback_hours` ago for a source without one) — or, while backfill chunks of the org are
/// open, after them. The planner and `sync` both build an org's jobs here.
///
/// # Errors
/// Database failures (reading cursors and open chunks, anchoring a new org's cursor).
pub(crate) async fn jobs_for_window(
    engine: &Engine,
    org: &Org,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    requested_by: &str,
    max_attempts: i64,
) -> Result<Vec<NewJob>, EngineError> {
    let cfg = &engine.config;
    let vault = &engine.vault;
    let now = engine.clock.now_ms();
    let end = to_ms.unwrap_or(now - SETTLE_LAG_MS).min(now);
    let sources = org_sources(org);
    let job = |kind: &str, from: Option<i64>, to: Option<i64>| NewJob {
        kind: kind.into(),
        from_ms: from,
        to_ms: to,
        requested_by: requested_by.into(),
        max_attempts,
    };
    // `start`: where the chunks would begin (the oldest source cursor); `latest`: the newest
    // source cursor, which decides whether to chunk at all — a source that stays behind (it
    // fails every run: a missing scope, downloads withheld) must not put its org into backfill
    // again and again while the others are current; its own cursor-based harvest catches it up.
    let (start, latest) = match from_ms {
        Some(from) => (from, from),
        None => {
            if let Some(open_end) = vault.open_backfill_end(org).await? {
                // Open chunks behind a source's cursor (an old period backfilled by hand) do not
                // pull its harvest back to them: reach from whichever is later.
                let mut from = i64::MAX;
                for s in &sources {
                    let base = vault
                        .last_window_end(org, s)
                        .await?
                        .map_or(open_end, |c| c.max(open_end));
                    from = from.min(vault.windows_reach(org, s, base).await?);
                }
                return Ok(vec![job(KIND_HARVEST, Some(from.min(end)), to_ms)]);
            }
            // Each source starts at its cursor, or the first lookback ago (as `sync_source`).
            let lookback = i64::try_from(cfg.sync.first_lookback_hours).unwrap_or(24) * 3_600_000;
            let (mut start, mut latest) = (i64::MAX, i64::MIN);
            for s in &sources {
                let from = vault
                    .last_window_end(org, s)
                    .await?
                    .unwrap_or(now - lookback);
                start = start.min(from);
                latest = latest.max(from);
            }
            (start.min(end), latest.min(end))
        }
    };
    let Some(chunk) = cfg.schedule.backfill_chunk_ms() else {
        return Ok(vec![job(KIND_HARVEST, from_ms, to_ms)]);
    };
    if end.saturating_sub(latest) <= 2 * chunk {
        return Ok(vec![job(KIND_HARVEST, from_ms, to_ms)]);
    }
    for s in &sources {
        if vault.last_window_end(org, s).await?.is_none() {
            vault.window_done(org, s, start, start).await?;
        }
    }
    let mut chunks = Vec::new();
    let mut from = start;
    while from < end {
        let to = from.saturating_add(chunk).min(end);
        chunks.push(job(KIND_BACKFILL, Some(from), Some(to)));
        from = to;
    }
    Ok(chunks)
}

/// One org's report from the reports of its jobs in window order (one job: that report as it
/// is). Counters add up, the window spans them all, the outcome is the weightiest (a refused
/// grant, then a failure, then a skip), sources are merged by name.
pub fn merge_chunk_reports(mut parts: Vec<OrgReport>) -> OrgReport {
    // One chunk skipped (its lease held by a process that may have died) leaves a period of the
    // window unharvested: for the org that is a failure to try again, not a skip.
    if parts.len() > 1 {
        for p in &mut parts {
            if let OrgOutcome::Skipped(why) = &p.outcome {
                let part = if p.window_from.is_empty() {
                    "one part of the window".to_owned()
                } else {
                    format!("the part from {} to {}", p.window_from, p.window_to)
                };
                p.outcome = OrgOutcome::Failed(format!("{part} was not harvested: {why}"));
                p.error_class = Some(webex::ErrorClass::Transient);
            }
        }
    }
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else {
        return OrgReport::default();
    };
    for p in parts {
        if out.org.is_empty() {
            out.org.clone_from(&p.org);
            out.org_id.clone_from(&p.org_id);
        }
        out.absorb(&p);
        out.api_calls += p.api_calls;
        out.window_problems += p.window_problems;
        out.window_problem_items.extend(p.window_problem_items);
        span(
            &mut out.window_from,
            &mut out.window_to,
            &p.window_from,
            &p.window_to,
        );
        if weight(&p.outcome) > weight(&out.outcome) {
            out.outcome = p.outcome;
            out.error_class = p.error_class;
        }
        for s in p.sources {
            match out.sources.iter_mut().find(|o| o.source == s.source) {
                Some(o) => merge_source(o, s),
                None => out.sources.push(s),
            }
        }
    }
    // Chunks running at once may each see the same org-wide item go missing or fail: name each
    // once.
    dedup(&mut out.missing);
    dedup(&mut out.failed);
    dedup(&mut out.window_problem_items);
    out.window_problem_items.truncate(PROBLEMS_LISTED);
    out
}

/// Drops repeated lines, keeping the first of each in place.
fn dedup(lines: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| seen.insert(l.clone()));
}

fn merge_source(o: &mut SourceReport, s: SourceReport) {
    span(
        &mut o.window_from,
        &mut o.window_to,
        &s.window_from,
        &s.window_to,
    );
    o.archived += s.archived;
    o.already_archived += s.already_archived;
    o.bytes += s.bytes;
    o.absent += s.absent;
    o.awaiting_metadata += s.awaiting_metadata;
    o.transient_left += s.transient_left;
    o.malformed += s.malformed;
    o.outside_window += s.outside_window;
    o.failed += s.failed;
    o.api_calls += s.api_calls;
    if weight(&s.outcome) > weight(&o.outcome) {
        o.outcome = s.outcome;
    }
}

/// Widens `[from, to)` (RFC 3339 in UTC, so text order is time order) to cover `[f, t)`; a
/// report that never started has empty bounds and widens nothing.
fn span(from: &mut String, to: &mut String, f: &str, t: &str) {
    if !f.is_empty() && (from.is_empty() || f < from.as_str()) {
        *from = f.to_owned();
    }
    if !t.is_empty() && (to.is_empty() || t > to.as_str()) {
        *to = t.to_owned();
    }
}

fn weight(o: &OrgOutcome) -> u8 {
    match o {
        OrgOutcome::Ok => 0,
        OrgOutcome::Skipped(_) => 1,
        OrgOutcome::Failed(_) => 2,
        OrgOutcome::NeedsReauth(_) => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(from: &str, to: &str, archived: u64, outcome: OrgOutcome) -> OrgReport {
        OrgReport {
            org: "acme".into(),
            org_id: "o1".into(),
            window_from: from.into(),
            window_to: to.into(),
            outcome: outcome.clone(),
            archived,
            api_calls: 2,
            window_problems: 1,
            window_problem_items: vec![format!("item of {from}")],
            missing: vec!["task t1: never appeared".into()],
            sources: vec![SourceReport {
                source: "wxcc".into(),
                outcome,
                window_from: from.into(),
                window_to: to.into(),
                archived,
                api_calls: 2,
                ..SourceReport::default()
            }],
            ..OrgReport::default()
        }
    }

    #[test]
    fn chunk_reports_add_up_over_the_whole_window_with_the_weightiest_outcome() {
        let merged = merge_chunk_reports(vec![
            part(
                "2024-01-01T00:00:00Z",
                "2024-01-08T00:00:00Z",
                3,
                OrgOutcome::Ok,
            ),
            part(
                "2024-01-08T00:00:00Z",
                "2024-01-15T00:00:00Z",
                4,
                OrgOutcome::Failed("chunk 2".into()),
            ),
            part(
                "2024-01-15T00:00:00Z",
                "2024-01-20T00:00:00Z",
                5,
                OrgOutcome::Ok,
            ),
        ]);
        assert_eq!(merged.archived, 12);
        assert_eq!(merged.api_calls, 6);
        assert_eq!(merged.window_problems, 3);
        assert_eq!(merged.window_problem_items.len(), 3);
        assert_eq!(merged.missing, ["task t1: never appeared"], "named once");
        assert_eq!(
            (merged.window_from.as_str(), merged.window_to.as_str()),
            ("2024-01-01T00:00:00Z", "2024-01-20T00:00:00Z")
        );
        assert_eq!(merged.outcome, OrgOutcome::Failed("chunk 2".into()));
        assert_eq!(merged.sources.len(), 1);
        let s = &merged.sources[0];
        assert_eq!((s.archived, s.api_calls), (12, 6));
        assert_eq!(s.outcome, OrgOutcome::Failed("chunk 2".into()));
        assert_eq!(
            (s.window_from.as_str(), s.window_to.as_str()),
            ("2024-01-01T00:00:00Z", "2024-01-20T00:00:00Z")
        );
    }

    #[test]
    fn a_skipped_chunk_fails_the_org_but_a_lone_skip_stays_a_skip() {
        let merged = merge_chunk_reports(vec![
            part(
                "2024-01-01T00:00:00Z",
                "2024-01-08T00:00:00Z",
                3,
                OrgOutcome::Ok,
            ),
            part(
                "2024-01-08T00:00:00Z",
                "2024-01-15T00:00:00Z",
                0,
                OrgOutcome::Skipped("held by host-b pid 7".into()),
            ),
        ]);
        let OrgOutcome::Failed(why) = &merged.outcome else {
            panic!(
                "a period left unharvested is a failure: {:?}",
                merged.outcome
            );
        };
        assert!(
            why.contains("2024-01-08T00:00:00Z") && why.contains("held by host-b pid 7"),
            "{why}"
        );
        assert_eq!(merged.error_class, Some(webex::ErrorClass::Transient));

        let alone = merge_chunk_reports(vec![part("", "", 0, OrgOutcome::Skipped("busy".into()))]);
        assert_eq!(alone.outcome, OrgOutcome::Skipped("busy".into()));
    }
}
