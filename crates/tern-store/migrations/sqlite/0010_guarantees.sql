-- Claims an agent has not acknowledged yet (0): when their lease runs out they go back to the
-- queue without using a try, because the task never started. In-process claims are
-- acknowledged as they are made (1).
ALTER TABLE task_instances ADD COLUMN acked INTEGER NOT NULL DEFAULT 1;
-- Control-plane processes and their heartbeats: the local attempts of a server that stopped
-- heartbeating are failed over by the others within seconds, not after a lease.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
-- Task instances in flight per run: housekeeping's "is anything left in this run?" is a probe.
CREATE INDEX ti_in_flight ON task_instances (run_pk)
    WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule');
