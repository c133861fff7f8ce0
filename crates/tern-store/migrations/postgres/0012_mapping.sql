-- Dynamic task mapping: a mapped task has one instance per element set, numbered by map_index
-- (-1 for a task that is not mapped, or not expanded yet, as in Airflow), each with the
-- elements it was expanded with (JSON object, key -> element).
ALTER TABLE task_instances ADD COLUMN map_index INTEGER NOT NULL DEFAULT -1;
ALTER TABLE task_instances ADD COLUMN map_values TEXT;
ALTER TABLE task_instances DROP CONSTRAINT task_instances_run_pk_task_id_key;
ALTER TABLE task_instances ADD CONSTRAINT task_instances_one_per_index UNIQUE (run_pk, task_id, map_index);
