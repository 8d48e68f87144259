//! Spool's job store and user store on PostgreSQL, shared by every process of a service.
//!
//! Layout (migrations in `migrations/`, embedded and applied at start in order, each once,
//! recorded in `spool_schema`): `spool_jobs` holds each job's record as JSON (the domain's
//! `Job`) beside the columns the queries select and order by (state, owner, project, times,
//! the lease); `spool_users` the users; `spool_meta` facts about the store.
//!
//! Invariants:
//! - Every change of a job reads the row `FOR UPDATE`, applies the domain's own transition
//!   (`Job::claim`, `finish`, ...) and writes record and columns together, in one transaction,
//!   so the columns never disagree with the record and the rules are the domain's, as in
//!   every other store.
//! - Claims take the oldest claimable row with `FOR UPDATE SKIP LOCKED`: concurrent claimers
//!   never wait on each other and never get the same job.
//! - The per-user cap is counted and the job inserted under a transaction-scoped advisory lock
//!   on the owner, so two processes cannot both take the last slot.
//! - Events are `NOTIFY`s on one channel sent inside the transaction that made the change, so
//!   they are delivered only if it commits; one `LISTEN` connection per process fans them out.
//!   The exception is a submission's `queued`, sent after the commit and coalesced (see
//!   `announce_queued`): notifying transactions commit one at a time.
//! - A schema newer than this build is refused at start, never changed.
//! - Finished jobs are kept in a per-process cache (see [`FinishedCache`]): they change only
//!   by being deleted (or, for its webhook's delivery state, updated), and every such change is
//!   announced (`forget:<id>`), so a status poll of a
//!   finished query costs no round trip. The cache serves only while this process's `LISTEN`
//!   connection is up; it is emptied when that connection drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use spool_domain::{
    CallbackState, Job, JobState, Lease, LeaseToken, Progress, QueryId, StateKind, StopEffect,
    Timestamp, Tombstone, UserRecord,
};
use spool_ports::{
    EventHub, JobEvent, JobFilter, JobStore, JobStoreError, Renewal, Stopped, UserStore,
    UserStoreError,
};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use tracing::{info, warn};

/// The schema migrations, in order: version, name, SQL.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "jobs", include_str!("../migrations/0001_jobs.sql")),
    (2, "users", include_str!("../migrations/0002_users.sql")),
    (3, "submit", include_str!("../migrations/0003_submit.sql")),
    (
        4,
        "project_case",
        include_str!("../migrations/0004_project_case.sql"),
    ),
    (
        5,
        "tombstones",
        include_str!("../migrations/0005_tombstones.sql"),
    ),
];

/// The channel job events are sent on; payloads are `queued`, `stop:<id>`, `finished:<id>`
/// and `forget:<id>` (a finished job was deleted or changed; only the cache of finished jobs
/// listens to it).
const JOBS_CHANNEL: &str = "spool_jobs";
/// The channel user changes are announced on.
const USERS_CHANNEL: &str = "spool_users";
/// Serializes migrations across processes starting at once (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x5350_4f4f_4c00_0001;
/// Connections each process keeps at most.
const MAX_CONNECTIONS: u32 = 16;
/// How long a call waits for a free connection (or a new one) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished jobs each process keeps in memory at most (a few MiB of records); when full, the
/// cache starts again empty: polls concentrate on recent queries.
const CACHE_ENTRIES: usize = 16_384;
/// A record this large (its SQL, mostly) is not cached.
const CACHE_MAX_RECORD: usize = 64 * 1024;

/// The finished jobs this process has read, served without a round trip.
///
/// Correctness rests on two facts: a finished job changes only by being deleted, and every
/// delete (and webhook state change) sends `forget:<id>` in its own transaction. So an entry is valid until this
/// process hears of its delete, and the cache is only used while the `LISTEN` connection is
/// up (`live`); a lost connection empties it, since deletes sent meanwhile are lost. A read
/// that raced with a delete must not put the job back: `generation` counts invalidations, and
/// a read inserts only if none happened since it began. Another process's delete is seen
/// within the notification's latency (milliseconds); this process's own at once.
#[derive(Debug, Default)]
struct FinishedCache {
    live: AtomicBool,
    generation: AtomicU64,
    jobs: Mutex<HashMap<QueryId, Job>>,
}

impl FinishedCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached job `id`, and the generation to pass to [`FinishedCache::keep`] otherwise.
    fn get(&self, id: QueryId) -> Result<Job, u64> {
        let generation = self.generation.load(Ordering::Acquire);
        if !self.live.load(Ordering::Acquire) {
            return Err(generation);
        }
        self.entries().get(&id).cloned().ok_or(generation)
    }

    /// Caches `job`, read when the generation was `seen`, if it is finished and nothing was
    /// invalidated since.
    fn keep(&self, job: &Job, seen: u64) {
        if !job.is_finished() || job.request.sql.len() > CACHE_MAX_RECORD {
            return;
        }
        let mut entries = self.entries();
        if !self.live.load(Ordering::Acquire) || self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(job.id, job.clone());
    }

    fn forget(&self, id: QueryId) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&id);
    }

    /// Empties the cache and serves from it again only if `live`.
    fn reset(&self, live: bool) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.live.store(live, Ordering::Release);
        entries.clear();
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL with any password hidden.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("applying Spool's schema to PostgreSQL at {url} failed: {source}")]
    Migrate {
        /// The URL with any password hidden.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The database was set up by a newer Spool.
    #[error(
        "the PostgreSQL database at {url} has Spool schema version {found}, newer than this \
         spool-server knows ({known}); upgrade spool-server instead of pointing an older one at it"
    )]
    TooNew {
        /// The URL with any password hidden.
        url: String,
        /// The version found.
        found: i32,
        /// The newest version this build knows.
        known: i32,
    },
}

/// Returns `url` with the password, if any, replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A connection pool on one Spool database, with the schema applied and events flowing.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pool: PgPool,
    jobs: EventHub,
    users: EventHub,
    finished: Arc<FinishedCache>,
    /// Asks the announcer task to send one `queued` notification (requests coalesce).
    queued: Arc<tokio::sync::Notify>,
}

/// Connects to the database at `url` (`postgres://user[:password]@host:port/db`), applies
/// the migrations it lacks and starts listening for other processes' changes. Fails with a
/// message naming the server when it cannot be reached.
pub async fn connect(url: &str) -> Result<PgDatabase, OpenError> {
    let shown = redact(url);
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before each use: it doubled the round trips of a status poll. A connection
        // the server dropped fails its next statement instead, and the pool replaces it.
        .test_before_acquire(false)
        .connect(url)
        .await
        .map_err(|source| OpenError::Connect {
            url: shown.clone(),
            source,
        })?;
    migrate(&pool, &shown).await?;
    let store = PgDatabase {
        pool,
        jobs: EventHub::new(),
        users: EventHub::new(),
        finished: Arc::default(),
        queued: Arc::default(),
    };
    let listener = PgListener::connect_with(&store.pool)
        .await
        .map_err(|source| OpenError::Connect {
            url: shown.clone(),
            source,
        })?;
    tokio::spawn(listen(listener, store.clone()));
    tokio::spawn(announce_queued(store.pool.clone(), store.queued.clone()));
    Ok(store)
}

async fn migrate(pool: &PgPool, url: &str) -> Result<(), OpenError> {
    let fail = |source| OpenError::Migrate {
        url: url.to_owned(),
        source,
    };
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS spool_schema (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    let found: i32 = sqlx::query("SELECT coalesce(max(version), 0) FROM spool_schema")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(fail)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > known {
        return Err(OpenError::TooNew {
            url: url.to_owned(),
            found,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(fail)?;
        sqlx::query("INSERT INTO spool_schema (version, name) VALUES ($1, $2)")
            .bind(*version)
            .bind(*name)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        info!(version, name, "applied a schema migration");
    }
    tx.commit().await.map_err(fail)?;
    Ok(())
}

/// Forwards notifications to the event hubs until the process ends. Notifications sent while
/// the `LISTEN` connection is down are lost, so when it drops the cache of finished jobs is
/// emptied and unused, and once a new connection listens again the gap is announced as a
/// queued job (idle workers look) and a user change (users are re-read).
async fn listen(mut listener: PgListener, db: PgDatabase) {
    let mut first = true;
    loop {
        if let Err(e) = listener.listen_all([JOBS_CHANNEL, USERS_CHANNEL]).await {
            warn!(error = %e, "cannot LISTEN for job events; retrying in a second");
        } else {
            db.finished.reset(true);
            if !std::mem::take(&mut first) {
                info!("listening for job events again");
                db.jobs.publish(JobEvent::Queued);
                db.users.publish(JobEvent::Queued);
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(note)) => dispatch(&db, note.channel(), note.payload()),
                    Ok(None) => {
                        warn!("lost the LISTEN connection to PostgreSQL; reconnecting");
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "listening for job events failed; reconnecting");
                        break;
                    }
                }
            }
            db.finished.reset(false);
        }
        // A fresh connection, retried every second until the server answers.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match PgListener::connect_with(&db.pool).await {
                Ok(fresh) => {
                    listener = fresh;
                    break;
                }
                Err(e) => warn!(error = %e, "cannot reconnect to LISTEN for job events"),
            }
        }
    }
}

/// Sends a `queued` notification after each request, coalescing the requests made while one
/// is on its way. Submissions announce this way, after their commit, rather than with a
/// `NOTIFY` in their own transaction: PostgreSQL holds a database-wide lock from a notifying
/// transaction's pre-commit through its WAL flush, so notifying submissions could not share a
/// flush (group commit) and ran one at a time. An announcement lost to a crash right after a
/// commit costs an idle worker elsewhere at most its poll interval (a second).
async fn announce_queued(pool: PgPool, requested: Arc<tokio::sync::Notify>) {
    loop {
        requested.notified().await;
        if let Err(e) = sqlx::query("SELECT pg_notify($1, 'queued')")
            .bind(JOBS_CHANNEL)
            .execute(&pool)
            .await
        {
            warn!(error = %e, "cannot announce a queued job; workers find it by polling");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Acts on one notification.
fn dispatch(db: &PgDatabase, channel: &str, payload: &str) {
    if channel == USERS_CHANNEL {
        db.users.publish(JobEvent::Queued);
    } else if let Some(id) = payload.strip_prefix("forget:") {
        match id.parse() {
            Ok(id) => db.finished.forget(id),
            Err(_) => db.finished.reset(true),
        }
    } else if let Some(event) = parse_event(payload) {
        db.jobs.publish(event);
    }
}

fn event_payload(event: JobEvent) -> String {
    match event {
        JobEvent::Queued => "queued".to_owned(),
        JobEvent::StopRequested(id) => format!("stop:{id}"),
        JobEvent::Finished(id) => format!("finished:{id}"),
    }
}

fn parse_event(payload: &str) -> Option<JobEvent> {
    if payload == "queued" {
        return Some(JobEvent::Queued);
    }
    let (kind, id) = payload.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "stop" => Some(JobEvent::StopRequested(id)),
        "finished" => Some(JobEvent::Finished(id)),
        _ => None,
    }
}

impl PgDatabase {
    /// The job store on this database.
    pub fn job_store(&self) -> PgJobStore {
        PgJobStore { db: self.clone() }
    }

    /// The user store on this database.
    pub fn user_store(&self) -> PgUserStore {
        PgUserStore { db: self.clone() }
    }
}

/// A [`JobStore`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgJobStore {
    db: PgDatabase,
}

fn backend(e: sqlx::Error) -> JobStoreError {
    JobStoreError::backend(e)
}

fn state_name(state: &JobState) -> &'static str {
    state.kind().as_str()
}

/// The `WHERE` clause of a [`JobFilter`], its values bound by [`bind_filter`] as `$1`-`$7`.
/// Ids compare byte-wise (`COLLATE "C"`), as [`spool_ports::JobPosition`] orders them.
macro_rules! filter_sql {
    () => {
        "($1::text IS NULL OR lower(project) = lower($1))
    AND ($2::text IS NULL OR owner = $2)
    AND ($3::bigint IS NULL OR submitted_at < $3)
    AND ($4::bigint IS NULL OR finished_at < $4)
    AND ($5::text IS NULL OR state = $5)
    AND ($6::bigint IS NULL OR (submitted_at, id COLLATE \"C\") < ($6, $7::text COLLATE \"C\"))"
    };
}

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &JobFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(filter.project.as_ref().map(|p| p.as_str().to_owned()))
        .bind(filter.owner.clone())
        .bind(filter.submitted_before.map(Timestamp::as_millis))
        .bind(filter.finished_before.map(Timestamp::as_millis))
        .bind(filter.state.map(StateKind::as_str))
        .bind(filter.before.map(|b| b.submitted_at.as_millis()))
        .bind(filter.before.map(|b| b.id.to_string()))
}

/// Reads a row's job record, parsed once. A newer release's record is refused by name, whether
/// it still decodes (its `format` says so) or not (its format is then read on its own).
fn job_of(row: &PgRow) -> Result<Job, JobStoreError> {
    let newer = |format, id: &str| {
        spool_domain::check_format(
            || format!("job record {id}"),
            format,
            spool_domain::JOB_FORMAT,
        )
        .map_err(JobStoreError::backend)
    };
    match row.try_get::<Json<Job>, _>("job") {
        Ok(Json(job)) => {
            newer(job.format, &job.id.to_string())?;
            Ok(job)
        }
        Err(e) => {
            if let Ok(Json(peek)) = row.try_get::<Json<spool_domain::FormatPeek>, _>("job") {
                newer(peek.format, &peek.id)?;
            }
            Err(backend(e))
        }
    }
}

/// The lease columns of `job`: token (its bits as a signed integer) and expiry.
fn lease_columns(job: &Job) -> (Option<i64>, Option<i64>) {
    match &job.state {
        JobState::Running { lease, .. } => (
            Some(lease.token.0.cast_signed()),
            Some(lease.expires_at.as_millis()),
        ),
        _ => (None, None),
    }
}

type Tx = Transaction<'static, Postgres>;

/// The record as the `json` column stores it.
fn record(job: &Job) -> Result<String, JobStoreError> {
    serde_json::to_string(job).map_err(JobStoreError::backend)
}

/// Reads the job `id` and locks its row for the rest of the transaction.
async fn lock(tx: &mut Tx, id: QueryId) -> Result<Option<Job>, JobStoreError> {
    let row = sqlx::query("SELECT job FROM spool_jobs WHERE id = $1 FOR UPDATE")
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?;
    row.as_ref().map(job_of).transpose()
}

/// Writes `job` (its row is locked) with its columns, and sends `event` in the same
/// statement if there is one (a round trip fewer than a separate `NOTIFY`).
async fn update(tx: &mut Tx, job: &Job, event: Option<JobEvent>) -> Result<(), JobStoreError> {
    let (token, expires) = lease_columns(job);
    let sql = if event.is_some() {
        "WITH changed AS (
             UPDATE spool_jobs
                SET state = $2, lease_token = $3, lease_expires_at = $4, finished_at = $5,
                    job = $6::json, reuse_key = $7, callback_due = $8
              WHERE id = $1
             RETURNING 1)
         SELECT pg_notify($9, $10) FROM changed"
    } else {
        "UPDATE spool_jobs
            SET state = $2, lease_token = $3, lease_expires_at = $4, finished_at = $5,
                job = $6::json, reuse_key = $7, callback_due = $8
          WHERE id = $1"
    };
    let mut query = sqlx::query(sql)
        .bind(job.id.to_string())
        .bind(state_name(&job.state))
        .bind(token)
        .bind(expires)
        .bind(job.finished_at().map(Timestamp::as_millis))
        .bind(record(job)?)
        .bind(match &job.state {
            JobState::Succeeded { reuse_key, .. } => reuse_key.clone(),
            _ => None,
        })
        .bind(match &job.callback {
            Some(spool_domain::Callback {
                state: CallbackState::Pending { next_at, .. },
                ..
            }) if job.is_finished() => Some(next_at.as_millis()),
            _ => None,
        });
    if let Some(event) = event {
        query = query.bind(JOBS_CHANNEL).bind(event_payload(event));
    }
    query.execute(&mut **tx).await.map_err(backend)?;
    Ok(())
}

impl PgJobStore {
    async fn begin(&self) -> Result<Tx, JobStoreError> {
        self.db.pool.begin().await.map_err(backend)
    }

    /// Locks job `id`, applies `transition` (the domain's rules) and writes the job back with
    /// the event the transition names, in one transaction; returns what the transition
    /// returned and the job as stored. `NotFound` if there is no such job; an error from the
    /// transition changes nothing.
    async fn change<T>(
        &self,
        id: QueryId,
        transition: impl FnOnce(&mut Job) -> Result<(T, Option<JobEvent>), JobStoreError>,
    ) -> Result<(T, Job), JobStoreError> {
        let mut tx = self.begin().await?;
        let mut job = lock(&mut tx, id)
            .await?
            .ok_or(JobStoreError::NotFound(id))?;
        let (value, event) = transition(&mut job)?;
        update(&mut tx, &job, event).await?;
        tx.commit().await.map_err(backend)?;
        Ok((value, job))
    }

    /// Locks the row `select` finds (one job, `FOR UPDATE SKIP LOCKED`) and claims it.
    async fn claim_first(
        &self,
        select: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        now: Timestamp,
        lease: Lease,
    ) -> Result<Option<Job>, JobStoreError> {
        let mut tx = self.begin().await?;
        let row = select.fetch_optional(&mut *tx).await.map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut job = job_of(&row)?;
        if job.claim(lease, now).is_err() {
            return Ok(None);
        }
        update(&mut tx, &job, None).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(job))
    }
}

#[async_trait]
impl JobStore for PgJobStore {
    async fn insert(&self, job: &Job, max_in_flight: Option<usize>) -> Result<(), JobStoreError> {
        // One round trip (migration 3's function): cap and insert in one transaction; the
        // event follows the commit (see `announce_queued`).
        let (token, expires) = lease_columns(job);
        let outcome: String = sqlx::query(
            "SELECT spool_submit($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10, $11, $12)",
        )
        .bind(job.id.to_string())
        .bind(job.owner.clone())
        .bind(job.request.project.as_str().to_owned())
        .bind(job.submitted_at.as_millis())
        .bind(state_name(&job.state))
        .bind(token)
        .bind(expires)
        .bind(job.finished_at().map(Timestamp::as_millis))
        .bind(record(job)?)
        .bind(max_in_flight.map(|limit| i64::try_from(limit).unwrap_or(i64::MAX)))
        .bind(job.idempotency.as_ref().map(|i| i.key.clone()))
        .bind(spool_domain::IDEMPOTENCY_WINDOW_MILLIS)
        .fetch_one(&self.db.pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(backend)?;
        match outcome.as_str() {
            "inserted" => {
                if matches!(job.state, JobState::Queued) {
                    // This process's workers at once; the others through the announcer.
                    self.db.jobs.publish(JobEvent::Queued);
                    self.db.queued.notify_one();
                }
                Ok(())
            }
            "exists" => Err(JobStoreError::AlreadyExists(job.id)),
            "capped" => Err(JobStoreError::TooManyInFlight {
                limit: max_in_flight.unwrap_or(0),
            }),
            other if other.starts_with("duplicate:") => {
                let held = sqlx::query("SELECT job FROM spool_jobs WHERE id = $1")
                    .bind(&other["duplicate:".len()..])
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(backend)?;
                match held.as_ref().map(job_of).transpose()? {
                    Some(held) => Err(JobStoreError::Duplicate(Box::new(held))),
                    // Deleted since: the key is free; the caller may submit again.
                    None => Err(JobStoreError::backend(std::io::Error::other(
                        "the job holding this idempotency key was deleted meanwhile; submit again",
                    ))),
                }
            }
            other => Err(JobStoreError::backend(std::io::Error::other(format!(
                "spool_submit answered {other:?}"
            )))),
        }
    }

    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        let seen = match self.db.finished.get(id) {
            Ok(job) => return Ok(Some(job)),
            Err(generation) => generation,
        };
        let row = sqlx::query("SELECT job FROM spool_jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(backend)?;
        let job = row.as_ref().map(job_of).transpose()?;
        if let Some(job) = &job {
            self.db.finished.keep(job, seen);
        }
        Ok(job)
    }

    async fn get_many(&self, ids: &[QueryId]) -> Result<HashMap<QueryId, Job>, JobStoreError> {
        let ids: Vec<String> = ids.iter().map(QueryId::to_string).collect();
        let rows = sqlx::query("SELECT job FROM spool_jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.db.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| job_of(row).map(|job| (job.id, job)))
            .collect()
    }

    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError> {
        // One statement: a lapsed lease first (its job has waited longest), else the oldest
        // queued job; the second scan runs only when the first found nothing.
        self.claim_first(
            sqlx::query(
                "WITH lapsed AS (
                     SELECT job FROM spool_jobs
                      WHERE state = 'running' AND lease_expires_at <= $1
                      ORDER BY lease_expires_at
                      LIMIT 1 FOR UPDATE SKIP LOCKED),
                 queued AS (
                     SELECT job FROM spool_jobs
                      WHERE state = 'queued' AND NOT EXISTS (SELECT 1 FROM lapsed)
                      ORDER BY submitted_at, id
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
                 SELECT job FROM lapsed UNION ALL SELECT job FROM queued",
            )
            .bind(now.as_millis()),
            now,
            lease,
        )
        .await
    }

    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
        progress: Progress,
    ) -> Result<Renewal, JobStoreError> {
        let (renewal, _) = self
            .change(id, |job| {
                job.renew(token, expires_at, progress)
                    .map_err(|_| JobStoreError::LeaseLost(id))?;
                let renewal = Renewal {
                    stop_requested: job.stop_requested(),
                };
                Ok((renewal, None))
            })
            .await?;
        Ok(renewal)
    }

    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        let ((), job) = self
            .change(id, |job| {
                job.finish(token, outcome)
                    .map_err(|_| JobStoreError::LeaseLost(id))?;
                Ok(((), Some(JobEvent::Finished(id))))
            })
            .await?;
        Ok(job)
    }

    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        let mut tx = self.begin().await?;
        let Some(mut job) = lock(&mut tx, id).await? else {
            return Ok(());
        };
        if !matches!(&job.state, JobState::Running { lease, .. } if lease.token == token) {
            return Ok(());
        }
        job.requeue();
        update(&mut tx, &job, Some(JobEvent::Queued)).await?;
        tx.commit().await.map_err(backend)
    }

    async fn stop(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Stopped, JobStoreError> {
        let (effect, job) = self
            .change(id, |job| {
                let effect = job
                    .request_stop(now, outcome)
                    .map_err(|_| JobStoreError::Finished(Box::new(job.clone())))?;
                let event = match effect {
                    StopEffect::Ended => JobEvent::Finished(id),
                    StopEffect::Requested => JobEvent::StopRequested(id),
                };
                Ok((effect, Some(event)))
            })
            .await?;
        Ok(match effect {
            StopEffect::Ended => Stopped::Ended(job),
            StopEffect::Requested => Stopped::Requested(job),
        })
    }

    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        // One statement, so one transaction: the announcement goes out only if the row went.
        let row = sqlx::query(
            "WITH gone AS (DELETE FROM spool_jobs WHERE id = $1 RETURNING job)
             SELECT job, pg_notify($2, 'forget:' || $1) FROM gone",
        )
        .bind(id.to_string())
        .bind(JOBS_CHANNEL)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(backend)?;
        self.db.finished.forget(id);
        row.as_ref().map(job_of).transpose()
    }

    async fn queued_ahead(&self, job: &Job) -> Result<u64, JobStoreError> {
        let ahead: i64 = sqlx::query(
            "SELECT count(*) FROM spool_jobs
              WHERE state = 'queued' AND (submitted_at, id) < ($1, $2)",
        )
        .bind(job.submitted_at.as_millis())
        .bind(job.id.to_string())
        .fetch_one(&self.db.pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(backend)?;
        Ok(u64::try_from(ahead).unwrap_or(0))
    }

    async fn expire(
        &self,
        id: QueryId,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        // One statement: the row goes, its tombstone comes and the delete is announced, or
        // none of it.
        let row = sqlx::query(
            "WITH gone AS (DELETE FROM spool_jobs WHERE id = $1 RETURNING job, owner),
                  kept AS (INSERT INTO spool_tombstones (id, owner, expired_at, keep_until)
                           SELECT $1, owner, $3, $4 FROM gone
                           ON CONFLICT (id) DO UPDATE
                              SET expired_at = excluded.expired_at,
                                  keep_until = excluded.keep_until)
             SELECT job, pg_notify($2, 'forget:' || $1) FROM gone",
        )
        .bind(id.to_string())
        .bind(JOBS_CHANNEL)
        .bind(at.as_millis())
        .bind(keep_until.as_millis())
        .fetch_optional(&self.db.pool)
        .await
        .map_err(backend)?;
        self.db.finished.forget(id);
        row.as_ref().map(job_of).transpose()
    }

    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, JobStoreError> {
        let rows = sqlx::query(
            "SELECT job FROM spool_jobs WHERE callback_due <= $1 ORDER BY callback_due LIMIT $2",
        )
        .bind(now.as_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(job_of).collect()
    }

    async fn update_callback(
        &self,
        id: QueryId,
        expected: &CallbackState,
        next: CallbackState,
    ) -> Result<bool, JobStoreError> {
        let mut tx = self.begin().await?;
        let mut job = lock(&mut tx, id)
            .await?
            .ok_or(JobStoreError::NotFound(id))?;
        if !job.advance_callback(expected, next) {
            return Ok(false);
        }
        update(&mut tx, &job, None).await?;
        // The record of a finished job changed: every process's cached copy must go.
        sqlx::query("SELECT pg_notify($1, 'forget:' || $2)")
            .bind(JOBS_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.db.finished.forget(id);
        Ok(true)
    }

    async fn tombstone(&self, id: QueryId) -> Result<Option<Tombstone>, JobStoreError> {
        let row =
            sqlx::query("SELECT owner, expired_at, keep_until FROM spool_tombstones WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(backend)?;
        row.map(|row| {
            Ok(Tombstone {
                id,
                owner: row.try_get("owner").map_err(backend)?,
                expired_at: Timestamp::from_millis(row.try_get("expired_at").map_err(backend)?),
                keep_until: Timestamp::from_millis(row.try_get("keep_until").map_err(backend)?),
            })
        })
        .transpose()
    }

    async fn forget_tombstones(&self, now: Timestamp) -> Result<usize, JobStoreError> {
        let done = sqlx::query("DELETE FROM spool_tombstones WHERE keep_until < $1")
            .bind(now.as_millis())
            .execute(&self.db.pool)
            .await
            .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn find_reusable(
        &self,
        reuse_key: &str,
        since: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        let row = sqlx::query(
            "SELECT job FROM spool_jobs
              WHERE reuse_key = $1 AND state = 'succeeded' AND finished_at >= $2
              ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(reuse_key)
        .bind(since.as_millis())
        .fetch_optional(&self.db.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(job_of).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobStoreError> {
        let sql = concat!(
            "SELECT job FROM spool_jobs WHERE ",
            filter_sql!(),
            " ORDER BY submitted_at, id COLLATE \"C\""
        );
        let rows = bind_filter(sqlx::query(sql), filter)
            .fetch_all(&self.db.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(job_of).collect()
    }

    async fn count_by_state(&self) -> Result<HashMap<StateKind, u64>, JobStoreError> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM spool_jobs GROUP BY state")
            .fetch_all(&self.db.pool)
            .await
            .map_err(backend)?;
        let mut counts = HashMap::new();
        for row in rows {
            let state: String = row.try_get("state").map_err(backend)?;
            let n: i64 = row.try_get("n").map_err(backend)?;
            let kind = StateKind::from_name(&state).ok_or_else(|| {
                JobStoreError::backend(std::io::Error::other(format!(
                    "spool_jobs holds an unknown state {state:?}"
                )))
            })?;
            counts.insert(kind, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn list_newest(
        &self,
        filter: &JobFilter,
        limit: usize,
    ) -> Result<Vec<Job>, JobStoreError> {
        let sql = concat!(
            "SELECT job FROM spool_jobs WHERE ",
            filter_sql!(),
            " ORDER BY submitted_at DESC, id COLLATE \"C\" DESC LIMIT $8"
        );
        let rows = bind_filter(sqlx::query(sql), filter)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.db.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(job_of).collect()
    }

    fn events(&self) -> BoxStream<'static, JobEvent> {
        self.db.jobs.subscribe()
    }
}

/// A [`UserStore`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgUserStore {
    db: PgDatabase,
}

fn user_backend(e: sqlx::Error) -> UserStoreError {
    UserStoreError::Backend(Box::new(e))
}

async fn notify_users(tx: &mut Tx) -> Result<(), UserStoreError> {
    sqlx::query("SELECT pg_notify($1, 'changed')")
        .bind(USERS_CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(user_backend)?;
    Ok(())
}

impl PgUserStore {
    /// Runs one change of the users table (`$1` the name, `$2` the record if given) in a
    /// transaction that announces it; returns the rows it changed.
    async fn change(
        &self,
        sql: &'static str,
        name: String,
        user: Option<UserRecord>,
    ) -> Result<u64, UserStoreError> {
        let mut tx = self.db.pool.begin().await.map_err(user_backend)?;
        let mut query = sqlx::query(sql).bind(name);
        if let Some(user) = user {
            query = query.bind(Json(user));
        }
        let done = query.execute(&mut *tx).await.map_err(user_backend)?;
        notify_users(&mut tx).await?;
        tx.commit().await.map_err(user_backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn list(&self) -> Result<Vec<UserRecord>, UserStoreError> {
        let rows = sqlx::query("SELECT record FROM spool_users ORDER BY name")
            .fetch_all(&self.db.pool)
            .await
            .map_err(user_backend)?;
        rows.iter()
            .map(|row| {
                let user = row
                    .try_get::<Json<UserRecord>, _>("record")
                    .map(|Json(user)| user)
                    .map_err(user_backend)?;
                spool_domain::check_format(
                    || format!("user record {}", user.name),
                    user.format,
                    spool_domain::USER_FORMAT,
                )
                .map_err(|e| UserStoreError::Backend(Box::new(e)))?;
                Ok(user)
            })
            .collect()
    }

    async fn initialize(&self, first: Vec<UserRecord>) -> Result<bool, UserStoreError> {
        let mut tx = self.db.pool.begin().await.map_err(user_backend)?;
        let marked = sqlx::query(
            "INSERT INTO spool_meta (key, value) VALUES ('users_initialized', 'true')
             ON CONFLICT (key) DO NOTHING",
        )
        .execute(&mut *tx)
        .await
        .map_err(user_backend)?;
        if marked.rows_affected() == 0 {
            return Ok(false);
        }
        for user in first {
            sqlx::query("INSERT INTO spool_users (name, record) VALUES ($1, $2)")
                .bind(user.name.clone())
                .bind(Json(user))
                .execute(&mut *tx)
                .await
                .map_err(user_backend)?;
        }
        notify_users(&mut tx).await?;
        tx.commit().await.map_err(user_backend)?;
        Ok(true)
    }

    async fn add(&self, user: UserRecord) -> Result<(), UserStoreError> {
        let name = user.name.clone();
        let added = self
            .change(
                "INSERT INTO spool_users (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                name.clone(),
                Some(user),
            )
            .await?;
        if added == 0 {
            return Err(UserStoreError::Exists(name));
        }
        Ok(())
    }

    async fn replace(&self, user: UserRecord) -> Result<(), UserStoreError> {
        let name = user.name.clone();
        let replaced = self
            .change(
                "UPDATE spool_users SET record = $2 WHERE name = $1",
                name.clone(),
                Some(user),
            )
            .await?;
        if replaced == 0 {
            return Err(UserStoreError::NotFound(name));
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), UserStoreError> {
        let removed = self
            .change(
                "DELETE FROM spool_users WHERE name = $1",
                name.to_owned(),
                None,
            )
            .await?;
        if removed == 0 {
            return Err(UserStoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        use futures::StreamExt;
        self.db.users.subscribe().map(|_| ()).boxed()
    }
}

#[cfg(test)]
mod tests;
