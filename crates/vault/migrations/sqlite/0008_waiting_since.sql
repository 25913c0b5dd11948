-- When a recording's sidecar first had to wait for Webex (Calling metadata answering 204), on the
-- engine's clock: the metadata grace period runs from there.
ALTER TABLE recordings ADD COLUMN waiting_since_ms BIGINT;
