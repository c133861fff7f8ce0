-- Work queued by any process wakes every server's waiting agents at once: a task instance that
-- becomes queued notifies channel `tern_queued` with its queue (one notification per queue and
-- transaction, sent at commit). Servers LISTEN on it (`Store::listen_for_queued`) instead of
-- polling. A row trigger with a WHEN clause costs nothing on updates that leave the state alone
-- (heartbeats) or set another one.
CREATE FUNCTION tern_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tern_queued', NEW.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER task_instances_queued AFTER INSERT OR UPDATE OF state ON task_instances
    FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION tern_notify_queued();
