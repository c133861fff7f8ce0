-- Dynamic task mapping: a mapped task has one instance per element set, numbered by map_index
-- (-1 for a task that is not mapped, or not expanded yet, as in Airflow), each with the
-- elements it was expanded with (JSON object, key -> element).
--
-- SQLite cannot drop the table's UNIQUE (run_pk, task_id), so the table is rebuilt. The
-- migration runs in one transaction with foreign keys on, where dropping the old table deletes
-- the tries and outputs that reference it: they are set aside first and put back after.
CREATE TABLE _mapping_tries AS SELECT * FROM task_tries;
CREATE TABLE _mapping_outputs AS SELECT * FROM task_outputs;
CREATE TABLE _mapping_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'task_instances';

CREATE TABLE task_instances_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_pk INTEGER NOT NULL REFERENCES dag_runs (id) ON DELETE CASCADE,
    dag_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    try_number INTEGER NOT NULL DEFAULT 0,
    max_tries INTEGER NOT NULL,
    queue TEXT NOT NULL,
    pool TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ready_at INTEGER,
    queued_at INTEGER,
    started_at INTEGER,
    ended_at INTEGER,
    attempt TEXT,
    lease_until INTEGER,
    worker TEXT,
    note TEXT,
    sensor_since BIGINT,
    pokes INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 1,
    map_index INTEGER NOT NULL DEFAULT -1,
    map_values TEXT,
    UNIQUE (run_pk, task_id, map_index)
);
INSERT INTO task_instances_new (id, run_pk, dag_id, run_id, task_id, state, try_number, max_tries,
    queue, pool, priority, ready_at, queued_at, started_at, ended_at, attempt, lease_until, worker,
    note, sensor_since, pokes, acked)
SELECT id, run_pk, dag_id, run_id, task_id, state, try_number, max_tries, queue, pool, priority,
    ready_at, queued_at, started_at, ended_at, attempt, lease_until, worker, note, sensor_since,
    pokes, acked
FROM task_instances;
DROP TABLE task_instances;
ALTER TABLE task_instances_new RENAME TO task_instances;
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM _mapping_seq), 0))
    WHERE name = 'task_instances';

INSERT INTO task_tries SELECT * FROM _mapping_tries;
INSERT INTO task_outputs SELECT * FROM _mapping_outputs;
DROP TABLE _mapping_tries;
DROP TABLE _mapping_outputs;
DROP TABLE _mapping_seq;

CREATE INDEX ti_queued ON task_instances (queue, priority DESC, queued_at, id) WHERE state = 'queued';
CREATE INDEX ti_scheduled ON task_instances (priority DESC, id) WHERE state = 'scheduled';
CREATE INDEX ti_active ON task_instances (state, dag_id, pool) WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry');
CREATE INDEX ti_running ON task_instances (worker, lease_until) WHERE state = 'running';
CREATE INDEX ti_busy ON task_instances (pool, dag_id) WHERE state IN ('queued', 'running');
CREATE INDEX ti_waiting ON task_instances (ready_at) WHERE state IN ('up_for_retry', 'up_for_reschedule');
CREATE INDEX ti_in_flight ON task_instances (run_pk)
    WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule');
