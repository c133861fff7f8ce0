-- One index for the instances in flight instead of two: `ti_active` (state, DAG, pool of the
-- waiting and running instances) duplicated what `ti_busy` (admission) and `ti_in_flight`
-- (is anything of this run left?) hold, and every state change of an instance in flight is
-- an index entry more to write. `ti_in_flight` now also holds the state, so counting the
-- instances in flight by state (the UI's activity fingerprint) still reads only the index.
DROP INDEX ti_active;
DROP INDEX ti_in_flight;
CREATE INDEX ti_in_flight ON task_instances (run_pk, state)
    WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule');
