-- DAG bundles (`dags.source`: a git branch): the bundle version every server loads (the commit
-- the last fetch found, whichever server fetched it), and the bundle version each DAG version
-- was loaded from.
CREATE TABLE dag_bundles (
    source TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
ALTER TABLE dag_versions ADD COLUMN bundle_version TEXT;
