-- The newest master key version that has sealed anything in this database. Every write of a
-- sealed value raises it to the writer's key version in the same transaction and refuses to seal
-- with an older key (see crates/vault/src/sealing.rs), so a process still holding a retired key
-- cannot write a value nobody can open once `keys rotate` drops that key. Keep in step with
-- ../postgres.
CREATE TABLE key_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    newest_version BIGINT NOT NULL
);

-- Start from the newest version already in use ('v1.<version>.<data>').
INSERT INTO key_state (id, newest_version)
SELECT 1, COALESCE(MAX(v), 0) FROM (
    SELECT CAST(substr(client_secret_enc, 4, instr(substr(client_secret_enc, 4), '.') - 1) AS INTEGER) AS v FROM orgs
    UNION ALL
    SELECT CAST(substr(access_token_enc, 4, instr(substr(access_token_enc, 4), '.') - 1) AS INTEGER) FROM orgs
    UNION ALL
    SELECT CAST(substr(refresh_token_enc, 4, instr(substr(refresh_token_enc, 4), '.') - 1) AS INTEGER) FROM orgs
    UNION ALL
    SELECT CAST(substr(code_verifier_enc, 4, instr(substr(code_verifier_enc, 4), '.') - 1) AS INTEGER) FROM pending_auths
);
