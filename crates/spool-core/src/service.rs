//! The use cases: submit, status, result, clean-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spool_domain::{
    Idempotency, Job, JobState, Principal, Progress, PublicStatus, QueryId, QueryRequest,
    ResultKey, Timestamp,
};
use spool_ports::{
    CancelToken, Clock, IdGenerator, JobStore, JobStoreError, ProjectCatalog, QueryEngine,
    ResultStore, StoredResult, Transcoder,
};
use tokio::sync::Notify;
use tracing::info;

use crate::ServiceError;

/// The adapters Spool runs on.
#[derive(Clone)]
pub struct Ports {
    /// Durable job records and the queue.
    pub jobs: Arc<dyn JobStore>,
    /// Result files.
    pub results: Arc<dyn ResultStore>,
    /// The SQL engine.
    pub engine: Arc<dyn QueryEngine>,
    /// What the projects hold (the metadata calls, result reuse's source versions).
    pub catalog: Arc<dyn ProjectCatalog>,
    /// Converts stored results for downloads in another format.
    pub transcoder: Arc<dyn Transcoder>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The id generator.
    pub ids: Arc<dyn IdGenerator>,
}

/// How the worker pool behaves.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Queries that run at once in this process; 0 makes a process that serves the API and
    /// leaves running queries to other processes sharing the job store.
    pub workers: usize,
    /// How long a claim lasts without renewal; workers renew at a third of it.
    pub lease: Duration,
    /// How often a running query's rows and bytes so far are recorded in the job store
    /// (with a lease renewal), for every process's status calls.
    pub progress_interval: Duration,
    /// How often idle workers look for claimable jobs without being told of one (leases that
    /// lapsed when their process died, a missed notification).
    pub poll_interval: Duration,
    /// A job claimed this many times without finishing (the process died each time) fails
    /// instead of running again; claims given back at a graceful shutdown do not count. Five
    /// by default: a query that needs too much memory or crashes its engine fails at once in
    /// its worker process, so what is left to interrupt a query is the server's own death (a
    /// kill, a power cut), which is not the query's fault.
    pub max_attempts: u32,
    /// A query running longer is stopped and fails with `query timed out after N s`;
    /// `None` lets queries run as long as they take.
    pub query_timeout: Option<Duration>,
    /// How long a cancelled query's engine gets to stop before the worker abandons it (its
    /// output is then discarded and the slot serves the next query).
    pub cancel_grace: Duration,
    /// A result with more rows fails the query; `None`: no limit.
    pub max_result_rows: Option<u64>,
    /// A result with more bytes fails the query as soon as it crosses the limit; `None`: no
    /// limit.
    pub max_result_bytes: Option<u64>,
    /// Queries one user may have queued or running at once; past it a submission is refused.
    /// `None`: no limit.
    pub max_in_flight_per_user: Option<usize>,
    /// Finished queries older than this are deleted with their results by the retention sweep;
    /// `None` keeps them until deleted.
    pub result_retention: Option<Duration>,
    /// How often the retention sweep runs (it also runs when the workers start).
    pub retention_sweep_every: Duration,
}

impl SpoolConfig {
    /// Returns the production settings with `workers` query slots: 30 s leases, a 1 s idle
    /// poll, at most 3 attempts per job, a one-hour query timeout, 2 s for a cancelled engine
    /// to stop, no caps on result size or queries in flight, and results kept 7 days (as
    /// Kylin), swept hourly.
    pub fn with_workers(workers: usize) -> Self {
        Self {
            workers,
            lease: Duration::from_secs(30),
            progress_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            max_attempts: 5,
            query_timeout: Some(Duration::from_secs(3600)),
            cancel_grace: Duration::from_secs(2),
            max_result_rows: None,
            max_result_bytes: None,
            max_in_flight_per_user: None,
            result_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_sweep_every: Duration::from_secs(3600),
        }
    }
}

/// What a submission asks beyond the query itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// How old an identical query's result may be to answer this one.
    pub reuse_max_age: Option<Duration>,
    /// Where to POST the final status (checked against the allowed hosts by the caller).
    pub callback_url: Option<String>,
}

/// What a submission stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The query's id.
    pub id: QueryId,
    /// The id is an earlier submission's with the same idempotency key; nothing new was stored.
    pub replayed: bool,
    /// The query was answered at once with a copy of an earlier identical query's result.
    pub cache_hit: bool,
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `parts` in order, as lowercase hex.
fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut digest = sha2::Sha256::default();
    for part in parts {
        sha2::Digest::update(&mut digest, part);
    }
    hex(&sha2::Digest::finalize(digest))
}

/// The key a result of `request` over tables at `version` is reused under.
pub(crate) fn reuse_key(request: &QueryRequest, version: &str) -> String {
    sha256_hex(&[fingerprint(request).as_bytes(), version.as_bytes()])
}

/// A fingerprint of what a submission asks: the SHA-256 of the parsed request, so that the same
/// request in other JSON spelling (field order, spaces) is the same request.
fn fingerprint(request: &QueryRequest) -> String {
    sha256_hex(&[serde_json::to_string(request)
        .unwrap_or_default()
        .as_bytes()])
}

/// A query's status as the status call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStatus {
    /// The query.
    pub id: QueryId,
    /// One of Kylin's four statuses.
    pub status: PublicStatus,
    /// A human-readable detail: the failure reason for a failed query.
    pub info: String,
    /// The rest of what a client sees; `None` for a query that is missing.
    pub detail: Option<crate::StatusDetail>,
    /// For a MISSING query that retention removed (told to its owner and admins while its
    /// tombstone is kept): when it expired.
    pub expired_at: Option<spool_domain::Timestamp>,
}

/// The application service. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Spool {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) ports: Ports,
    pub(crate) config: SpoolConfig,
    /// Cancel tokens of the queries this process is running. Held briefly, never across await.
    pub(crate) running: Mutex<HashMap<QueryId, CancelToken>>,
    /// Wakes an idle worker when the job store announces a queued job.
    pub(crate) wake: Notify,
    /// Tells waiters in this process that a query it ran has left the running map.
    pub(crate) ended: Notify,
    /// Callers waiting for a query's status to change.
    pub(crate) waiters: crate::lifecycle::Waiters,
    /// Wakes webhook delivery when a query ends.
    pub(crate) callbacks_due: Arc<Notify>,
    /// What this process counts of the queries it runs.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The last submission time this process gave a job, in milliseconds.
    last_submitted: std::sync::atomic::AtomicI64,
}

impl Inner {
    /// The clock's time for a new job, later than every job this process submitted before it:
    /// two submissions within one millisecond still list newest first.
    pub(crate) fn submit_time(&self) -> Timestamp {
        use std::sync::atomic::Ordering;
        let now = self.ports.clock.now().as_millis();
        let previous = self
            .last_submitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or(now);
        Timestamp::from_millis(now.max(previous.saturating_add(1)))
    }

    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, CancelToken>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Spool {
    /// Builds the service on `ports`. No worker runs until [`Spool::start`].
    pub fn new(ports: Ports, config: SpoolConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                ports,
                config,
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                ended: Notify::new(),
                waiters: crate::lifecycle::Waiters::default(),
                callbacks_due: Arc::new(Notify::new()),
                metrics: crate::metrics::Metrics::default(),
                last_submitted: std::sync::atomic::AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Returns the configuration.
    pub fn config(&self) -> &SpoolConfig {
        &self.inner.config
    }

    /// Accepts a query for `who` and returns its id once the job is durably stored. The query
    /// runs later, on the worker pool. `who` must be granted the request's project.
    pub async fn submit(
        &self,
        who: &Principal,
        request: QueryRequest,
    ) -> Result<QueryId, ServiceError> {
        Ok(self.submit_keyed(who, request, None).await?.id)
    }

    /// [`Spool::submit`] with the client's idempotency key: the same key from the same user
    /// within 24 hours answers with the first submission's id (`replayed`) and stores nothing;
    /// the same key with a different request is `IdempotencyConflict`.
    pub async fn submit_keyed(
        &self,
        who: &Principal,
        request: QueryRequest,
        key: Option<String>,
    ) -> Result<Submitted, ServiceError> {
        let options = SubmitOptions {
            idempotency_key: key,
            ..SubmitOptions::default()
        };
        self.submit_with(who, request, options).await
    }

    /// [`Spool::submit`] with [`SubmitOptions`]: an idempotency key (as
    /// [`Spool::submit_keyed`]); `reuse_max_age`, with which an identical earlier query's
    /// result (the same request, the project's tables unchanged since it ran, finished within
    /// the age) answers at once as a new query with its own copy of that result
    /// (`cache_hit`; only queries of a project the caller may query are reused, whoever ran
    /// them); a webhook URL, POSTed the final status when the query ends.
    pub async fn submit_with(
        &self,
        who: &Principal,
        request: QueryRequest,
        options: SubmitOptions,
    ) -> Result<Submitted, ServiceError> {
        let SubmitOptions {
            idempotency_key: key,
            reuse_max_age,
            callback_url,
        } = options;
        if !who.may_query(request.project.as_str()) {
            return Err(ServiceError::Forbidden(format!(
                "user '{}' may not query project '{}'",
                who.name, request.project
            )));
        }
        let ports = &self.inner.ports;
        let idempotency = key.map(|key| Idempotency {
            key,
            fingerprint: fingerprint(&request),
        });
        let reused = match reuse_max_age {
            Some(age) if !age.is_zero() => self.reused(who, &request, age).await?,
            _ => None,
        };
        let mut job = match reused {
            Some(job) => job,
            None => Job::new(
                ports.ids.next_id(),
                who.name.clone(),
                request,
                self.inner.submit_time(),
            ),
        };
        job.idempotency = idempotency;
        job.callback = callback_url.map(|url| spool_domain::Callback {
            url,
            state: spool_domain::CallbackState::Pending {
                attempts: 0,
                next_at: job.submitted_at,
            },
        });
        // The store checks the key, counts and inserts in one step, so the key and the cap
        // hold across processes.
        // A reused job is finished: it takes no slot.
        let cap = self
            .inner
            .config
            .max_in_flight_per_user
            .filter(|_| !job.is_finished());
        match ports.jobs.insert(&job, cap).await {
            Ok(()) => {}
            Err(JobStoreError::Duplicate(held)) => {
                let same = held.idempotency.as_ref().map(|i| &i.fingerprint)
                    == job.idempotency.as_ref().map(|i| &i.fingerprint);
                if !same {
                    return Err(ServiceError::IdempotencyConflict { id: held.id });
                }
                info!(query_id = %held.id, user = %who.name, "repeated submission answered with the first");
                return Ok(Submitted {
                    id: held.id,
                    replayed: true,
                    cache_hit: held.reused_from.is_some(),
                });
            }
            Err(JobStoreError::TooManyInFlight { limit }) => {
                return Err(ServiceError::TooManyQueries { limit });
            }
            Err(e @ JobStoreError::Backend(_)) => {
                tracing::warn!(user = %who.name, error = %e, source = ?std::error::Error::source(&e), "the job store did not take a query");
                return Err(if crate::error::is_storage_full(&e) {
                    ServiceError::StoreFull
                } else {
                    ServiceError::StoreUnavailable(
                        std::error::Error::source(&e)
                            .map_or_else(|| e.to_string(), ToString::to_string),
                    )
                });
            }
            Err(e) => return Err(e.into()),
        }
        info!(query_id = %job.id, user = %who.name, project = %job.request.project, "query submitted");
        Ok(Submitted {
            id: job.id,
            replayed: false,
            cache_hit: job.reused_from.is_some(),
        })
    }

    /// A succeeded job for `request` answered from an earlier identical query's result (same
    /// request, tables unchanged since, finished within `max_age`), with its own copy of the
    /// result; `None` when there is nothing to reuse (or the copy failed: it runs instead).
    async fn reused(
        &self,
        who: &Principal,
        request: &QueryRequest,
        max_age: Duration,
    ) -> Result<Option<Job>, ServiceError> {
        let ports = &self.inner.ports;
        let Some(version) = ports
            .catalog
            .source_version(&request.project)
            .await
            .map_err(|e| ServiceError::Internal(Box::new(e)))?
        else {
            return Ok(None);
        };
        let now = ports.clock.now();
        let since = now.plus_millis(-i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let key = reuse_key(request, &version);
        let Some(earlier) = ports.jobs.find_reusable(&key, since).await? else {
            return Ok(None);
        };
        let (
            JobState::Succeeded {
                rows,
                columns,
                sha256,
                uncompressed_bytes,
                ..
            },
            Some(from),
        ) = (&earlier.state, earlier.result_key())
        else {
            return Ok(None);
        };
        let mut job = Job::new(
            ports.ids.next_id(),
            who.name.clone(),
            request.clone(),
            self.inner.submit_time(),
        );
        let to = ResultKey::new(job.id, 0);
        let bytes = match ports.results.copy(from, to).await {
            Ok(bytes) => bytes,
            Err(e) => {
                info!(query_id = %earlier.id, error = %e, "the reusable result went away; running the query");
                return Ok(None);
            }
        };
        job.state = JobState::Succeeded {
            finished_at: now,
            rows: *rows,
            bytes,
            columns: columns.clone(),
            attempt: 0,
            sha256: sha256.clone(),
            reuse_key: None,
            uncompressed_bytes: *uncompressed_bytes,
        };
        job.progress = Progress { rows: *rows, bytes };
        job.reused_from = Some(earlier.id);
        Ok(Some(job))
    }

    /// Returns the job if it exists and `who` may see it: an admin, or its owner while still
    /// granted its project.
    pub(crate) async fn visible_job(
        &self,
        who: &Principal,
        id: QueryId,
    ) -> Result<Option<Job>, ServiceError> {
        let job = self.inner.ports.jobs.get(id).await?;
        // A user whose grant on the project was revoked no longer sees its queries there.
        Ok(job.filter(|j| who.can_see(&j.owner) && who.may_query(j.request.project.as_str())))
    }

    /// Returns the status of a query. An unknown id, or one `who` may not see, is `MISSING`.
    pub async fn status(&self, who: &Principal, id: QueryId) -> Result<QueryStatus, ServiceError> {
        let Some(job) = self.visible_job(who, id).await? else {
            let tombstone = self
                .inner
                .ports
                .jobs
                .tombstone(id)
                .await?
                .filter(|t| who.can_see(&t.owner));
            let (info, expired_at) = match tombstone {
                Some(t) => (
                    format!(
                        "query expired under the retention period at {}; its result is deleted",
                        t.expired_at.to_rfc3339()
                    ),
                    Some(t.expired_at),
                ),
                None => ("query not found".to_owned(), None),
            };
            return Ok(QueryStatus {
                id,
                status: PublicStatus::Missing,
                info,
                detail: None,
                expired_at,
            });
        };
        let (status, info) = job.public_status();
        let detail = Some(self.detail(&job).await?);
        Ok(QueryStatus {
            id,
            status,
            info,
            detail,
            expired_at: None,
        })
    }

    /// Returns the job record of a query `who` may see.
    pub async fn job(&self, who: &Principal, id: QueryId) -> Result<Job, ServiceError> {
        self.visible_job(who, id)
            .await?
            .ok_or(ServiceError::NotFound(id))
    }

    /// Opens the result of a successful query for streaming.
    pub async fn result(&self, who: &Principal, id: QueryId) -> Result<StoredResult, ServiceError> {
        let info = self.download_info(who, id, None).await?;
        self.open_result_range(&info, 0..info.bytes).await
    }

    /// Returns how many queries this process is running now.
    pub fn running_count(&self) -> usize {
        self.inner.running().len()
    }
}
