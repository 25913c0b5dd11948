-- The work queue shared by every wxvault process on this database (serve, worker, sync).
-- A job harvests one org over one window (every source of the org, side by side). At most one job
-- per lane (the org) runs at a time across all processes: the partial unique index makes a second
-- claim of a lane fail instead of running twice. A running job carries its holder and a lease
-- that the holder's heartbeat extends; an expired lease is put back in the queue. Times are epoch
-- milliseconds of the engine's clock.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    org BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    lane TEXT NOT NULL,
    from_ms BIGINT,
    to_ms BIGINT,
    requested_by TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts BIGINT NOT NULL DEFAULT 0,
    lost_leases BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    holder TEXT,
    host TEXT,
    pid BIGINT,
    lease_expires_ms BIGINT,
    last_error TEXT,
    result TEXT,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT
);
CREATE INDEX jobs_queue ON jobs (state, next_attempt_ms);
CREATE INDEX jobs_org ON jobs (org, state);
CREATE UNIQUE INDEX jobs_one_running_per_lane ON jobs (lane) WHERE state = 'running';

-- Process-wide singletons (the planner): who holds it, until when, and what it did last.
CREATE TABLE singletons (
    name TEXT PRIMARY KEY,
    holder TEXT,
    host TEXT,
    pid BIGINT,
    expires_at_ms BIGINT,
    last_run_ms BIGINT,
    last_rescan_ms BIGINT,
    last_summary TEXT
);
