-- The newest master key version that has sealed anything in this database. Every write of a
-- sealed value raises it to the writer's key version in the same transaction and refuses to seal
-- with an older key (see crates/vault/src/sealing.rs), so a process still holding a retired key
-- cannot write a value nobody can open once `keys rotate` drops that key. Keep in step with
-- ../sqlite.
CREATE TABLE key_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    newest_version BIGINT NOT NULL
);

-- Start from the newest version already in use ('v1.<version>.<data>').
INSERT INTO key_state (id, newest_version)
SELECT 1, COALESCE(MAX(v), 0) FROM (
    SELECT CASE WHEN client_secret_enc ~ '^v1\.[0-9]{1,9}\.' THEN split_part(client_secret_enc, '.', 2)::BIGINT END AS v FROM orgs
    UNION ALL
    SELECT CASE WHEN access_token_enc ~ '^v1\.[0-9]{1,9}\.' THEN split_part(access_token_enc, '.', 2)::BIGINT END FROM orgs
    UNION ALL
    SELECT CASE WHEN refresh_token_enc ~ '^v1\.[0-9]{1,9}\.' THEN split_part(refresh_token_enc, '.', 2)::BIGINT END FROM orgs
    UNION ALL
    SELECT CASE WHEN code_verifier_enc ~ '^v1\.[0-9]{1,9}\.' THEN split_part(code_verifier_enc, '.', 2)::BIGINT END FROM pending_auths
) AS versions;
