-- When a singleton (the planner) first ran: the daily rescan is first due a day after it.
-- Before this column the first pass stamped last_rescan_ms to start that clock, so `status`
-- showed a rescan that never ran; now last_rescan_ms is only ever a rescan that was queued.
ALTER TABLE singletons ADD COLUMN first_run_ms BIGINT;
UPDATE singletons SET first_run_ms = COALESCE(last_rescan_ms, last_run_ms);
