-- Self-service connect (`wxvault serve`): invites, pending OAuth authorizations, browser and
-- operator sessions. Keep in step with ../sqlite: only the identity columns differ.
-- No secret is stored in plaintext: invite tokens, session ids, CSRF tokens, OAuth states and
-- browser-session cookies are high-entropy random values stored as hex SHA-256 only; the PKCE
-- verifier (needed back in plaintext) is sealed like org secrets.

-- An invitation link for a customer admin. Single use: used_at_ms is set by one conditional
-- UPDATE. Status (open / used / expired / revoked) is computed against the caller's clock.
CREATE TABLE invites (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    org_name TEXT NOT NULL,
    sources_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    -- The integration to connect through; NULL = the operator's default.
    client_id TEXT,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    revoked_at_ms BIGINT
);

-- An OAuth authorization in flight, keyed by SHA-256(state) and bound to SHA-256(the browser
-- session cookie). Deleted when taken (single use) or purged once expired.
-- code_verifier_enc: sealed, AAD = 'wxvault:pending_auth:<state_hash>:code_verifier'.
CREATE TABLE pending_auths (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_hash TEXT NOT NULL UNIQUE,
    browser_session_hash TEXT NOT NULL,
    invite_id BIGINT REFERENCES invites (id) ON DELETE CASCADE,
    org_name TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_verifier_enc TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX pending_auths_expires ON pending_auths (expires_at_ms);

-- Operator (dashboard) and connect (browser) sessions, looked up by SHA-256 of the cookie value.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('operator', 'connect')),
    subject TEXT NOT NULL,
    csrf_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at_ms);
