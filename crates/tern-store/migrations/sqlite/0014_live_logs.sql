-- Task logs kept in an object store (`logs.store`): while a try runs, its chunks live here, where
-- every server reads them (live tail from any server); when the try has ended, one server ships
-- them as one object and deletes them. `log_ships` lists the logs to ship, with their back-off
-- when the store is down. `start_at`/`end_at` are byte offsets of a chunk in its log; the chunks
-- of one log never overlap (unique start). `attempt` and `seq` make a resent chunk a no-op (a
-- sensor's pokes are attempts of one try that share its log).
CREATE TABLE log_chunks (
    path TEXT NOT NULL,
    attempt TEXT NOT NULL,
    seq BIGINT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (path, attempt, seq)
);
CREATE UNIQUE INDEX log_chunks_by_start ON log_chunks (path, start_at);

CREATE TABLE log_ships (
    path TEXT PRIMARY KEY,
    ti_id BIGINT NOT NULL,
    try_number BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX log_ships_due ON log_ships (due_at);
