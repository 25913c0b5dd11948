-- Per-client-id request budget shared by every wxvault process on this database (Webex limits
-- requests per integration client id, not per process). Same on both backends.
-- `tat_ms` is the budget's "theoretical arrival time" (GCRA): each request moves it one
-- emission interval further and may be sent once it is within the burst allowance of now.
-- `paused_until_ms`: a 429's Retry-After, noted by whichever process received it; nobody sends
-- for this client id before then. Times are epoch milliseconds of the writers' system clocks.
-- Client ids are not secrets (orgs.client_id holds them in clear too).
CREATE TABLE request_budgets (
    client_id TEXT PRIMARY KEY,
    tat_ms BIGINT NOT NULL,
    paused_until_ms BIGINT NOT NULL DEFAULT 0,
    updated_at_ms BIGINT NOT NULL
);
