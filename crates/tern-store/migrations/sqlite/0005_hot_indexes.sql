-- Partial indexes matching the hot queries word for word (SQLite uses a partial index only when
-- the query's terms imply its WHERE): running attempts by worker and lease, busy instances per
-- pool and DAG (admission), queued and running runs per DAG.
CREATE INDEX ti_running ON task_instances (worker, lease_until) WHERE state = 'running';
CREATE INDEX ti_busy ON task_instances (pool, dag_id) WHERE state IN ('queued', 'running');
CREATE INDEX dag_runs_queued ON dag_runs (dag_id, logical_date) WHERE state = 'queued';
CREATE INDEX dag_runs_running ON dag_runs (dag_id) WHERE state = 'running';
