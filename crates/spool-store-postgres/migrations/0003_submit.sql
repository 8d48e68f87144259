-- A submission in one round trip: the per-user cap is counted under a transaction-scoped
-- advisory lock on the owner and the job inserted, in the caller's transaction (one
-- statement: its own). Returns 'inserted', 'exists' or 'capped'. max_in_flight NULL means no
-- cap. No NOTIFY here: a notifying transaction holds a database-wide lock through its commit's
-- WAL flush, which would serialize every submission; the store announces queued jobs after
-- the commit instead, coalesced.
CREATE FUNCTION spool_submit(
    p_id TEXT, p_owner TEXT, p_project TEXT, p_submitted_at BIGINT, p_state TEXT,
    p_lease_token BIGINT, p_lease_expires_at BIGINT, p_finished_at BIGINT, p_job JSON,
    p_max_in_flight BIGINT
) RETURNS TEXT
LANGUAGE plpgsql AS $$
BEGIN
    IF p_max_in_flight IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_owner, 0));
        IF (SELECT count(*) FROM spool_jobs
             WHERE owner = p_owner AND state IN ('queued', 'running')) >= p_max_in_flight THEN
            RETURN 'capped';
        END IF;
    END IF;
    INSERT INTO spool_jobs
        (id, owner, project, submitted_at, state, lease_token, lease_expires_at, finished_at, job)
    VALUES (p_id, p_owner, p_project, p_submitted_at, p_state, p_lease_token, p_lease_expires_at,
            p_finished_at, p_job)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'exists';
    END IF;
    RETURN 'inserted';
END;
$$;
