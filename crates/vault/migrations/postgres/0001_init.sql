-- wxvault state database, PostgreSQL flavour. Keep in step with ../sqlite: only the identity columns differ.
CREATE TABLE orgs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_auth TEXT NOT NULL,
    -- Sealed secrets: 'v1.<key version>.<base64(nonce || ciphertext)>', AAD = 'wxvault:org:<org_id>:<field>'.
    client_secret_enc TEXT NOT NULL,
    access_token_enc TEXT,
    refresh_token_enc TEXT,
    sources_json TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    access_expires_at_ms BIGINT,
    refresh_expires_at_ms BIGINT,
    last_refresh_at_ms BIGINT,
    scopes TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- One row per task (WxCC: a contact). capture_requested is 1 / 0 / NULL (unknown).
CREATE TABLE tasks (
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
    PRIMARY KEY (org, task_id)
);
CREATE INDEX tasks_org_state ON tasks (org, state);

-- One row per recording file (WxCC: a capture segment).
CREATE TABLE recordings (
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
    PRIMARY KEY (org, recording_id)
);
CREATE INDEX recordings_org_state ON recordings (org, state);
CREATE INDEX recordings_org_task ON recordings (org, task_id);

-- Completed harvest windows [from_ms, to_ms) per org and source.
CREATE TABLE windows (
    org BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL,
    done_at_ms BIGINT NOT NULL,
    PRIMARY KEY (org, source, from_ms, to_ms)
);

-- Audit / event log. Never holds secrets.
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org BIGINT REFERENCES orgs (id) ON DELETE SET NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_org_at ON events (org, at_ms);
