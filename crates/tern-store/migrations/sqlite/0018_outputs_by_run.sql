-- A run's outputs are read by the run (every claim reads its run's outputs for templates): by
-- instance, the read visited every instance of the run, thousands in a wide run that has
-- published nothing.
ALTER TABLE task_outputs ADD COLUMN run_pk BIGINT;
UPDATE task_outputs SET run_pk = (SELECT t.run_pk FROM task_instances t WHERE t.id = task_outputs.ti_id);
CREATE INDEX task_outputs_by_run ON task_outputs (run_pk);
