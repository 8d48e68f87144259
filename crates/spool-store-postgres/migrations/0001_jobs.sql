-- Jobs: the whole record as JSON (spool_domain::Job), and the columns the store's queries
-- select and order by, kept in step with the record by every write. The record is `json`, not
-- `jsonb`: it is never queried inside, and `json` is returned as stored, without conversion.
CREATE TABLE spool_jobs (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    project          TEXT NOT NULL,
    submitted_at     BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    lease_token      BIGINT,
    lease_expires_at BIGINT,
    finished_at      BIGINT,
    job              JSON NOT NULL
);
CREATE INDEX spool_jobs_queue ON spool_jobs (submitted_at, id) WHERE state = 'queued';
CREATE INDEX spool_jobs_leases ON spool_jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX spool_jobs_in_flight ON spool_jobs (owner) WHERE state IN ('queued', 'running');
CREATE INDEX spool_jobs_finished ON spool_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX spool_jobs_by_project ON spool_jobs (project, submitted_at);
CREATE INDEX spool_jobs_by_owner ON spool_jobs (owner, submitted_at);
CREATE INDEX spool_jobs_by_submission ON spool_jobs (submitted_at, id);
