-- The instances that let a waiting task be decided before all its upstream tasks are done
-- (a failed, upstream-failed or skipped upstream task settles an `all_success` task at once).
-- With this index a result can tell in one probe that nothing of its run is such, and so that
-- a downstream task with an upstream task still in flight keeps waiting, without reading the
-- states of the whole run (a wide join's every result did: quadratic in its width).
CREATE INDEX ti_decided_early ON task_instances (run_pk)
    WHERE state IN ('failed', 'upstream_failed', 'skipped');
