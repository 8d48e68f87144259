-- What is left of a job retention expired, for its owner's status calls, until keep_until.
CREATE TABLE spool_tombstones (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expired_at  BIGINT NOT NULL,
    keep_until  BIGINT NOT NULL
);
CREATE INDEX spool_tombstones_keep_until ON spool_tombstones (keep_until);

-- Result reuse: the key under which a succeeded job's result may serve a later identical query
-- over unchanged tables (the request's fingerprint with the tables' version).
ALTER TABLE spool_jobs ADD COLUMN reuse_key TEXT;
CREATE INDEX spool_jobs_reuse ON spool_jobs (reuse_key, finished_at) WHERE reuse_key IS NOT NULL;

-- Webhooks: when a finished job's pending delivery is next due (NULL: nothing to deliver).
ALTER TABLE spool_jobs ADD COLUMN callback_due BIGINT;
CREATE INDEX spool_jobs_callback_due ON spool_jobs (callback_due) WHERE callback_due IS NOT NULL;
