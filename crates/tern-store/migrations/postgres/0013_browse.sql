-- Browsing across DAGs (the UI's Browse page, the API's `~` routes): task instances of one
-- state newest first, and runs by logical date, of one state or of any.
CREATE INDEX ti_by_state ON task_instances (state, id);
CREATE INDEX dag_runs_by_date ON dag_runs (logical_date);
CREATE INDEX dag_runs_by_state ON dag_runs (state, logical_date);
