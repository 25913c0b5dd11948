-- Per-org leases: at most one wxvault process works on an org (and scope) at a time. Same on both
-- backends. A lease is taken by one conditional upsert (free, expired, or already ours), renewed
-- by its holder while the org's run goes on, and deleted when the run ends. A holder that died
-- (kill -9) stops renewing, so its lease can be taken over once expires_at_ms has passed.
-- Times are epoch milliseconds of the caller's clock. `holder` is random per run; host and pid
-- are only for the message another process shows.
CREATE TABLE leases (
    org BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    scope TEXT NOT NULL DEFAULT 'sync',
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    acquired_at_ms BIGINT NOT NULL,
    renewed_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (org, scope)
);
