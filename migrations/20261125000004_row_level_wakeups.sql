-- Wake-ups only when a job becomes claimable, and nothing for claims and completions.
--
-- The statement-level triggers of 20261125000002 ran a PL/pgSQL function over the transition
-- table for every UPDATE, including each claim and each completion — measurable on the drain
-- path (`tierflow bench`). Row-level triggers with a WHEN clause cost nothing for those updates;
-- pg_notify de-duplicates identical payloads within a transaction, so a bulk insert still sends
-- one notification per kind.

DROP TRIGGER tierflow_notify_insert ON apalis.jobs;
DROP TRIGGER tierflow_notify_update ON apalis.jobs;
DROP FUNCTION apalis.tierflow_notify_claimable();

CREATE FUNCTION apalis.tierflow_notify_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tierflow_jobs', NEW.job_type);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tierflow_notify_insert AFTER INSERT ON apalis.jobs
    FOR EACH ROW WHEN (NEW.status IN ('Pending', 'Failed'))
    EXECUTE FUNCTION apalis.tierflow_notify_kind();

CREATE TRIGGER tierflow_notify_update AFTER UPDATE OF status, run_at ON apalis.jobs
    FOR EACH ROW WHEN (NEW.status IN ('Pending', 'Failed'))
    EXECUTE FUNCTION apalis.tierflow_notify_kind();
