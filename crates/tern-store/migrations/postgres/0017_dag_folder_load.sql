-- The fingerprint of the DAG folder whose load the database holds (see `tern_dag::fingerprint`):
-- a server or command whose folder has the same fingerprint skips evaluating it. One row at most;
-- a DAG bundle's load or a deleted DAG removes it.
CREATE TABLE dag_folder_load (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    loaded_at BIGINT NOT NULL
);
