-- Idempotency keys: the newest job of an owner holding a key has it in `idem_key` (one per
-- owner and key); an older holder past the key's window gives it up to the new submission.
ALTER TABLE spool_jobs ADD COLUMN idem_key TEXT;
CREATE UNIQUE INDEX spool_jobs_idem_key ON spool_jobs (owner, idem_key) WHERE idem_key IS NOT NULL;

-- A submission in one round trip, in the caller's transaction (one statement: its own):
-- under a transaction-scoped advisory lock on the owner (when a cap or a key needs it), the
-- idempotency key is checked first (a repeat within p_window milliseconds of the holder's
-- submission answers 'duplicate:<holder id>', never 'capped'), then the per-user cap, then the
-- insert. Returns 'inserted', 'exists', 'capped' or 'duplicate:<id>'. p_max_in_flight NULL
-- means no cap, p_idem_key NULL no key. No NOTIFY here: a notifying transaction holds a
-- database-wide lock through its commit's WAL flush, which would serialize every submission;
-- the store announces queued jobs after the commit instead, coalesced.
CREATE FUNCTION spool_submit(
    p_id TEXT, p_owner TEXT, p_project TEXT, p_submitted_at BIGINT, p_state TEXT,
    p_lease_token BIGINT, p_lease_expires_at BIGINT, p_finished_at BIGINT, p_job JSON,
    p_max_in_flight BIGINT, p_idem_key TEXT, p_window BIGINT
) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    held_id TEXT;
    held_at BIGINT;
BEGIN
    IF p_max_in_flight IS NOT NULL OR p_idem_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_owner, 0));
    END IF;
    IF p_idem_key IS NOT NULL THEN
        SELECT id, submitted_at INTO held_id, held_at FROM spool_jobs
         WHERE owner = p_owner AND idem_key = p_idem_key;
        IF FOUND THEN
            IF held_at > p_submitted_at - p_window THEN
                RETURN 'duplicate:' || held_id;
            END IF;
            UPDATE spool_jobs SET idem_key = NULL WHERE id = held_id;
        END IF;
    END IF;
    IF p_max_in_flight IS NOT NULL THEN
        IF (SELECT count(*) FROM spool_jobs
             WHERE owner = p_owner AND state IN ('queued', 'running')) >= p_max_in_flight THEN
            RETURN 'capped';
        END IF;
    END IF;
    INSERT INTO spool_jobs
        (id, owner, project, submitted_at, state, lease_token, lease_expires_at, finished_at, job,
         idem_key)
    VALUES (p_id, p_owner, p_project, p_submitted_at, p_state, p_lease_token, p_lease_expires_at,
            p_finished_at, p_job, p_idem_key)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'exists';
    END IF;
    RETURN 'inserted';
END;
$$;
