-- Items are keyed by (org, source, id): a Webex Calling recording id and a WxCC capture id live in
-- different namespaces, so neither may shadow the other. SQLite cannot change a primary key in
-- place: the two tables are rebuilt with the same columns and their rows copied (their indexes go
-- with the old tables and are made again). Keep in step with ../postgres.
CREATE TABLE tasks_v7 (
    org BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    capture_requested BIGINT,
    state TEXT NOT NULL,
    reason TEXT,
    attributes_json TEXT NOT NULL,
    checks BIGINT NOT NULL DEFAULT 0,
    last_checked_ms BIGINT,
    first_seen_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    state_changed_ms BIGINT NOT NULL,
    PRIMARY KEY (org, source, task_id)
);
INSERT INTO tasks_v7 (org, task_id, source, created_ms, capture_requested, state, reason,
    attributes_json, checks, last_checked_ms, first_seen_ms, updated_ms, state_changed_ms)
SELECT org, task_id, source, created_ms, capture_requested, state, reason,
    attributes_json, checks, last_checked_ms, first_seen_ms, updated_ms, state_changed_ms
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v7 RENAME TO tasks;
CREATE INDEX tasks_org_state ON tasks (org, source, state);

CREATE TABLE recordings_v7 (
    org BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    recording_id TEXT NOT NULL,
    source TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_created_ms BIGINT NOT NULL,
    file_name TEXT,
    attributes_json TEXT NOT NULL,
    state TEXT NOT NULL,
    object_key TEXT,
    sha256 TEXT,
    size_bytes BIGINT,
    sidecar_key TEXT,
    reason TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    first_seen_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    state_changed_ms BIGINT NOT NULL,
    PRIMARY KEY (org, source, recording_id)
);
INSERT INTO recordings_v7 (org, recording_id, source, task_id, task_created_ms, file_name,
    attributes_json, state, object_key, sha256, size_bytes, sidecar_key, reason, attempts,
    last_error, first_seen_ms, updated_ms, state_changed_ms)
SELECT org, recording_id, source, task_id, task_created_ms, file_name,
    attributes_json, state, object_key, sha256, size_bytes, sidecar_key, reason, attempts,
    last_error, first_seen_ms, updated_ms, state_changed_ms
FROM recordings;
DROP TABLE recordings;
ALTER TABLE recordings_v7 RENAME TO recordings;
CREATE INDEX recordings_org_state ON recordings (org, source, state);
CREATE INDEX recordings_org_task ON recordings (org, source, task_id);
