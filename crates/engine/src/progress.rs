//! Progress reporting without tying the engine to a terminal: the CLI draws bars on a TTY and
//! logs otherwise.

/// Something that happened worth showing.
#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent {
    /// Tasks listed in one window.
    TasksListed(u64),
    /// One recording archived, with its size.
    Archived(u64),
    /// One recording failed permanently.
    Failed,
}

/// Receives progress events; must be cheap and never block.
pub trait Progress: Send + Sync {
    fn event(&self, org: &str, event: ProgressEvent);
}

/// Discards events (tests, `--json`).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _org: &str, _event: ProgressEvent) {}
}

/// Progress as plain lines for logs and cron mail (standard error off a terminal): a line after
/// the first window is listed, then at most one per `every`, with running counts per org. A
/// ten-year backfill thus shows it is alive without flooding the log.
pub struct LogLines {
    every: std::time::Duration,
    now: Box<dyn Fn() -> std::time::Instant + Send + Sync>,
    write: Box<dyn Fn(&str) + Send + Sync>,
    orgs: std::sync::Mutex<std::collections::HashMap<String, OrgLine>>,
}

#[derive(Default)]
struct OrgLine {
    windows: u64,
    tasks: u64,
    archived: u64,
    bytes: u64,
    failed: u64,
    last: Option<std::time::Instant>,
}

impl LogLines {
    /// Lines to standard error, at most one a minute per org.
    pub fn stderr() -> LogLines {
        LogLines::new(
            std::time::Duration::from_secs(60),
            Box::new(std::time::Instant::now),
            Box::new(|line| eprintln!("{line}")),
        )
    }

    /// Lines to `write`, at most one per `every` per org by the clock `now`.
    pub fn new(
        every: std::time::Duration,
        now: Box<dyn Fn() -> std::time::Instant + Send + Sync>,
        write: Box<dyn Fn(&str) + Send + Sync>,
    ) -> LogLines {
        LogLines {
            every,
            now,
            write,
            orgs: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Progress for LogLines {
    fn event(&self, org: &str, event: ProgressEvent) {
        let Ok(mut orgs) = self.orgs.lock() else {
            return;
        };
        let o = orgs.entry(org.to_string()).or_default();
        match event {
            ProgressEvent::TasksListed(n) => {
                o.windows += 1;
                o.tasks += n;
            }
            ProgressEvent::Archived(b) => {
                o.archived += 1;
                o.bytes += b;
            }
            ProgressEvent::Failed => o.failed += 1,
        }
        let now = (self.now)();
        let due = match o.last {
            None => o.windows > 0,
            Some(last) => now.duration_since(last) >= self.every,
        };
        if due {
            o.last = Some(now);
            (self.write)(&format!(
                "progress {org}: {} window(s) listed, {} tasks, {} archived ({} bytes), {} failed",
                o.windows, o.tasks, o.archived, o.bytes, o.failed
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn one_line_after_the_first_window_then_at_most_one_a_minute() {
        let start = Instant::now();
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (o, l) = (offset.clone(), lines.clone());
        let p = LogLines::new(
            Duration::from_secs(60),
            Box::new(move || start + *o.lock().unwrap()),
            Box::new(move |s| l.lock().unwrap().push(s.to_string())),
        );
        p.event("acme", ProgressEvent::Archived(10));
        assert!(lines.lock().unwrap().is_empty(), "nothing before a window");
        p.event("acme", ProgressEvent::TasksListed(5));
        for _ in 0..500 {
            p.event("acme", ProgressEvent::TasksListed(1));
            p.event("acme", ProgressEvent::Archived(1));
        }
        assert_eq!(lines.lock().unwrap().len(), 1);
        *offset.lock().unwrap() = Duration::from_secs(61);
        p.event("acme", ProgressEvent::Failed);
        let got = lines.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            "progress acme: 501 window(s) listed, 505 tasks, 501 archived (510 bytes), 1 failed"
        );
        // Each org has its own line.
        p.event("other", ProgressEvent::TasksListed(0));
        assert_eq!(lines.lock().unwrap().len(), 3);
    }
}
