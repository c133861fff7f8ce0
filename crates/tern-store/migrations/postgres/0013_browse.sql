-- Browsing across DAGs (the UI's Browse page, the API's `~` routes): the failing task instances
-- newest first (partial indexes, so the hot path pays only when an instance enters or leaves a
-- failed state; the active states have theirs already), and runs by logical date, of one state
-- or of any.
CREATE INDEX ti_failed ON task_instances (id) WHERE state = 'failed';
CREATE INDEX ti_upstream_failed ON task_instances (id) WHERE state = 'upstream_failed';
CREATE INDEX dag_runs_by_date ON dag_runs (logical_date);
CREATE INDEX dag_runs_by_state ON dag_runs (state, logical_date);
