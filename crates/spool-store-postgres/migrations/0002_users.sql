-- Users (spool_domain::UserRecord as JSON), and facts about the store itself.
CREATE TABLE spool_users (
    name   TEXT PRIMARY KEY,
    record JSONB NOT NULL
);
CREATE TABLE spool_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
