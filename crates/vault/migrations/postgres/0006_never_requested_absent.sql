-- Tasks Webex never said a capture was requested for (captureRequested null) and that got no
-- capture within the grace period were recorded as `missing` before; they are legitimately absent
-- (reason code capture_never_requested). Still re-checked for [sync] rescan_days like before.
UPDATE tasks
SET state = 'absent',
    reason = 'capture_never_requested: Webex never said a capture was requested, and none appeared within the grace period'
WHERE state = 'missing' AND capture_requested IS NULL;
