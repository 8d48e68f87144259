-- What is left of a job retention expired, for its owner's status calls, until keep_until.
CREATE TABLE spool_tombstones (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expired_at  BIGINT NOT NULL,
    keep_until  BIGINT NOT NULL
);
CREATE INDEX spool_tombstones_keep_until ON spool_tombstones (keep_until);
