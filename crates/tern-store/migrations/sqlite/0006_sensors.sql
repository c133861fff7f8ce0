-- Sensors: when the current try's first poke started (its timeout counts from there) and how
-- many pokes the try has made; waiting instances by the time they are due again.
ALTER TABLE task_instances ADD COLUMN sensor_since BIGINT;
ALTER TABLE task_instances ADD COLUMN pokes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX ti_waiting ON task_instances (ready_at) WHERE state IN ('up_for_retry', 'up_for_reschedule');
