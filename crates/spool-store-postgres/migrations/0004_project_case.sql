-- Project names compare without regard to ASCII case, as the catalog resolves them: `SSB` is
-- `ssb`. The filter on project uses lower(project); this index serves it.
CREATE INDEX spool_jobs_by_project_ci ON spool_jobs (lower(project), submitted_at);
DROP INDEX spool_jobs_by_project;
