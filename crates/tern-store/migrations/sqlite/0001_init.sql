-- tern metadata schema (SQLite). Times are UTC epoch milliseconds; flags are 0/1 integers.
CREATE TABLE dags (
    dag_id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    is_paused INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    latest_version_id INTEGER NOT NULL,
    schedule TEXT NOT NULL,
    timezone TEXT NOT NULL,
    last_parsed_at INTEGER NOT NULL
);

CREATE TABLE dag_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (dag_id, version)
);

CREATE TABLE import_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX import_errors_file ON import_errors (file);

CREATE TABLE dag_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    version_id INTEGER NOT NULL REFERENCES dag_versions (id),
    run_type TEXT NOT NULL,
    state TEXT NOT NULL,
    logical_date INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_end INTEGER NOT NULL,
    conf TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    UNIQUE (dag_id, run_id)
);
CREATE UNIQUE INDEX dag_runs_one_per_interval ON dag_runs (dag_id, logical_date) WHERE run_type <> 'manual';
CREATE INDEX dag_runs_active ON dag_runs (state, dag_id) WHERE state IN ('queued', 'running');
CREATE INDEX dag_runs_by_dag ON dag_runs (dag_id, logical_date);

CREATE TABLE task_instances (
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
    UNIQUE (run_pk, task_id)
);
CREATE INDEX ti_queued ON task_instances (queue, priority DESC, queued_at, id) WHERE state = 'queued';
CREATE INDEX ti_scheduled ON task_instances (priority DESC, id) WHERE state = 'scheduled';
CREATE INDEX ti_active ON task_instances (state, dag_id, pool) WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry');

CREATE TABLE task_tries (
    ti_id INTEGER NOT NULL REFERENCES task_instances (id) ON DELETE CASCADE,
    try_number INTEGER NOT NULL,
    attempt TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    exit_code INTEGER,
    note TEXT,
    log_path TEXT NOT NULL,
    PRIMARY KEY (ti_id, try_number)
);

CREATE TABLE task_outputs (
    ti_id INTEGER NOT NULL REFERENCES task_instances (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ti_id, key)
);

CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    slots INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);
INSERT INTO pools (name, slots, description) VALUES ('default_pool', 128, 'Tasks that name no pool');

CREATE TABLE backfills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id TEXT NOT NULL,
    from_date INTEGER NOT NULL,
    to_date INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
