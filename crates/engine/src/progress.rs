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
