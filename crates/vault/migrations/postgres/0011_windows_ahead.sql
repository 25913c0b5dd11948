-- A harvested window that starts after the source's cursor (a backfill chunk that finished before
-- the chunk ahead of it, or an ad-hoc `sync --from` past the cursor) is kept with ahead = 1: it
-- does not move the cursor (MAX(to_ms) of the windows with ahead = 0) until the windows before it
-- are harvested, then it is promoted (ahead = 0) and the cursor jumps over it.
ALTER TABLE windows ADD COLUMN ahead BIGINT NOT NULL DEFAULT 0;
