-- Notifications outbox: one row per message to send (a DAG run ended, a task went up for retry)
-- and connection, written in the transaction that changed the state. The control plane's
-- notifier claims due pending rows (a claim pushes next_at one lease ahead and counts a try),
-- sends them, and marks them sent, due again later (retry), or failed with the error.
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    dag_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL,
    hook TEXT NOT NULL,
    conn TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    tries BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX notifications_due ON notifications (next_at) WHERE state = 'pending';
CREATE INDEX notifications_created ON notifications (created_at);
