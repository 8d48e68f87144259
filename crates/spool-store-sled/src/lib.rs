//! The job store on sled, an embedded transactional key-value store.
//!
//! Layout, seven trees changed together in sled transactions:
//! - `jobs`: the 16 id bytes → the job as JSON;
//! - `queue`: `submitted_at (8 bytes, big-endian) ++ id` for each queued job, so claims take
//!   the oldest first;
//! - `leases`: `lease expiry (8 bytes, big-endian) ++ id` for each running job, so a claim finds
//!   a lapsed lease without reading every job;
//! - `in_flight`: owner → count of that owner's unfinished jobs (8 bytes, big-endian), for the
//!   per-user cap, checked and changed in the insert's transaction;
//! - `keys`: `owner ++ 0 ++ idempotency key` → the id of the newest job holding the key, for
//!   idempotent submissions, checked in the insert's transaction;
//! - `tombstones`: the 16 id bytes → the [`Tombstone`] of a job retention expired (as JSON),
//!   written in the expiring transaction;
//! - `callbacks`: `next attempt (8 bytes) ++ id` for each finished job whose webhook is pending,
//!   so the delivery loop finds due webhooks without reading every job.
//!
//! Invariants:
//! - The four indexes always agree with `jobs`: every change goes through [`Tx::write`], which
//!   derives every index entry from the job before and after the change.
//! - Every change is flushed to disk before the call returns.
//! - sled locks its directory, so one process owns the store. Any job found `Running` when the
//!   store opens was held by a process that died; [`SledJobStore::open`] puts it back in the
//!   queue (and rebuilds the indexes from `jobs`, which also upgrades a store written before
//!   they existed). Events go to subscribers in this process only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use spool_domain::{
    CallbackState, Job, JobState, Lease, LeaseToken, Progress, QueryId, StopEffect, Timestamp,
    Tombstone,
};
use spool_ports::{EventHub, JobEvent, JobFilter, JobStore, JobStoreError, Renewal, Stopped};
use tracing::info;

/// A [`JobStore`] in a sled database directory.
#[derive(Clone)]
pub struct SledJobStore {
    handle: Arc<Handle>,
    events: EventHub,
}

/// The open database, replaced when sled breaks. After an I/O error (a full disk) sled fails
/// every later call of that instance, so the store lets it go and the next call opens the
/// directory again, from what reached the disk: once space returns, the store works again
/// without a restart.
struct Handle {
    dir: std::path::PathBuf,
    current: std::sync::Mutex<Option<Arc<Trees>>>,
}

impl Handle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Trees>>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The open database, opened again first when the last one broke. Blocking.
    fn trees(&self) -> Result<Arc<Trees>, JobStoreError> {
        let mut current = self.lock();
        if let Some(trees) = &*current {
            return Ok(Arc::clone(trees));
        }
        // The broken instance's last handles are dropped as their calls return; its file lock
        // goes with them (`open_db` waits for it a moment).
        let trees = Arc::new(open_trees(&self.dir)?);
        info!("the job store was opened again after an I/O error");
        *current = Some(Arc::clone(&trees));
        Ok(trees)
    }

    /// Lets `trees` go when `error` is sled's I/O error, so that the next call reopens it.
    fn check<T>(
        &self,
        trees: &Arc<Trees>,
        result: Result<T, JobStoreError>,
    ) -> Result<T, JobStoreError> {
        if let Err(JobStoreError::Backend(e)) = &result
            && matches!(e.downcast_ref::<SledError>(), Some(SledError::Io(_)))
        {
            let mut current = self.lock();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, trees)) {
                tracing::warn!(error = %e, "the job store hit an I/O error; it is opened again on the next call");
                *current = None;
            }
        }
        result
    }
}

struct Trees {
    db: sled::Db,
    jobs: sled::Tree,
    queue: sled::Tree,
    leases: sled::Tree,
    in_flight: sled::Tree,
    keys: sled::Tree,
    tombstones: sled::Tree,
    callbacks: sled::Tree,
}

/// Errors local to this adapter, wrapped as [`JobStoreError::Backend`].
#[derive(Debug, thiserror::Error)]
enum SledError {
    /// sled's own `Error` names no source: its I/O error is kept as one, so the core can tell
    /// a full disk from other failures.
    #[error("sled: {0}")]
    Io(#[source] std::io::Error),
    #[error("sled failure")]
    Sled(#[source] sled::Error),
    /// A submission refused before it was written: the disk is (nearly) full.
    #[error("job store: {0}")]
    Full(#[source] std::io::Error),
    #[error("job record is corrupt")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Newer(spool_domain::NewerFormat),
}

impl From<sled::Error> for SledError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Self::Io(io),
            other => Self::Sled(other),
        }
    }
}

/// Free bytes below which the store takes no new query (see [`SledJobStore::insert`]).
const SPACE_RESERVE: u64 = 16 << 20;

fn backend_io(e: std::io::Error) -> JobStoreError {
    JobStoreError::backend(SledError::Io(e))
}

fn backend(e: impl Into<SledError>) -> JobStoreError {
    JobStoreError::backend(e.into())
}

/// An instant as 8 bytes that sort like the instant (negative ones first).
fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.as_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

fn index_key(t: Timestamp, id: QueryId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&time_bytes(t));
    key[8..].copy_from_slice(id.as_bytes());
    key
}

fn queue_key(job: &Job) -> [u8; 24] {
    index_key(job.submitted_at, job.id)
}

/// The `callbacks` entry of a finished job whose webhook is pending.
fn callback_key(job: &Job) -> Option<[u8; 24]> {
    match &job.callback {
        Some(spool_domain::Callback {
            state: CallbackState::Pending { next_at, .. },
            ..
        }) if job.is_finished() => Some(index_key(*next_at, job.id)),
        _ => None,
    }
}

fn lease_key(job: &Job) -> Option<[u8; 24]> {
    match &job.state {
        JobState::Running { lease, .. } => Some(index_key(lease.expires_at, job.id)),
        _ => None,
    }
}

fn id_from(bytes: &[u8]) -> Option<QueryId> {
    <[u8; 16]>::try_from(bytes).ok().map(QueryId::from_bytes)
}

/// Reads a job record, parsed once. A newer release's record is refused by name, whether it
/// still decodes (its `format` says so) or not (its format is then read on its own).
fn decode(bytes: &[u8]) -> Result<Job, SledError> {
    let newer = |format, id: &str| {
        spool_domain::check_format(
            || format!("job record {id}"),
            format,
            spool_domain::JOB_FORMAT,
        )
        .map_err(SledError::Newer)
    };
    match serde_json::from_slice::<Job>(bytes) {
        Ok(job) => {
            newer(job.format, &job.id.to_string())?;
            Ok(job)
        }
        Err(e) => {
            if let Ok(peek) = serde_json::from_slice::<spool_domain::FormatPeek>(bytes) {
                newer(peek.format, &peek.id)?;
            }
            Err(e.into())
        }
    }
}

/// How an operation inside a transaction ended, when it did not commit.
enum Abort {
    NotFound,
    Exists,
    LeaseLost,
    Finished(Box<Job>),
    Duplicate(Box<Job>),
    TooMany(usize),
    Corrupt(serde_json::Error),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

fn abort<T>(why: Abort) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(why))
}

/// The six trees inside one transaction.
struct Tx<'a> {
    jobs: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    leases: &'a TransactionalTree,
    in_flight: &'a TransactionalTree,
    keys: &'a TransactionalTree,
    tombstones: &'a TransactionalTree,
    callbacks: &'a TransactionalTree,
}

/// The `keys` entry of a job with an idempotency key.
fn idempotency_key(job: &Job) -> Option<Vec<u8>> {
    let key = &job.idempotency.as_ref()?.key;
    let mut bytes = Vec::with_capacity(job.owner.len() + 1 + key.len());
    bytes.extend_from_slice(job.owner.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    Some(bytes)
}

impl Tx<'_> {
    fn get(&self, id: QueryId) -> TxResult<Option<Job>> {
        match self.jobs.get(id.as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e))),
            None => Ok(None),
        }
    }

    fn existing(&self, id: QueryId) -> TxResult<Job> {
        self.get(id)?.map_or_else(|| abort(Abort::NotFound), Ok)
    }

    fn in_flight_of(&self, owner: &str) -> TxResult<u64> {
        Ok(self
            .in_flight
            .get(owner.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn add_in_flight(&self, owner: &str, delta: i64) -> TxResult<()> {
        let n = self.in_flight_of(owner)?.saturating_add_signed(delta);
        if n == 0 {
            self.in_flight.remove(owner.as_bytes())?;
        } else {
            self.in_flight.insert(owner.as_bytes(), &n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Replaces `before` (the job as stored, `None` if new) by `after` (`None` to delete), and
    /// every index entry with it.
    fn write(&self, before: Option<&Job>, after: Option<&Job>) -> TxResult<()> {
        if let Some(old) = before {
            if matches!(old.state, JobState::Queued) {
                self.queue.remove(&queue_key(old)[..])?;
            }
            if let Some(key) = lease_key(old) {
                self.leases.remove(&key[..])?;
            }
            if let Some(key) = callback_key(old) {
                self.callbacks.remove(&key[..])?;
            }
            if !old.is_finished() {
                self.add_in_flight(&old.owner, -1)?;
            }
            // The entry goes only if it still names this job (a later one may hold the key).
            if let Some(key) = idempotency_key(old)
                && self.keys.get(&key)?.as_deref() == Some(&old.id.as_bytes()[..])
            {
                self.keys.remove(key)?;
            }
        }
        match after {
            Some(new) => {
                let bytes = serde_json::to_vec(new)
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?;
                self.jobs.insert(&new.id.as_bytes()[..], bytes)?;
                if matches!(new.state, JobState::Queued) {
                    self.queue
                        .insert(&queue_key(new)[..], &new.id.as_bytes()[..])?;
                }
                if let Some(key) = lease_key(new) {
                    self.leases.insert(&key[..], &new.id.as_bytes()[..])?;
                }
                if let Some(key) = callback_key(new) {
                    self.callbacks.insert(&key[..], &new.id.as_bytes()[..])?;
                }
                if !new.is_finished() {
                    self.add_in_flight(&new.owner, 1)?;
                }
                if let Some(key) = idempotency_key(new) {
                    self.keys.insert(key, &new.id.as_bytes()[..])?;
                }
            }
            None => {
                if let Some(old) = before {
                    self.jobs.remove(&old.id.as_bytes()[..])?;
                }
            }
        }
        Ok(())
    }
}

fn map_tx<T>(id: QueryId, r: Result<T, TransactionError<Abort>>) -> Result<T, JobStoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(Abort::NotFound)) => Err(JobStoreError::NotFound(id)),
        Err(TransactionError::Abort(Abort::Exists)) => Err(JobStoreError::AlreadyExists(id)),
        Err(TransactionError::Abort(Abort::LeaseLost)) => Err(JobStoreError::LeaseLost(id)),
        Err(TransactionError::Abort(Abort::Finished(job))) => Err(JobStoreError::Finished(job)),
        Err(TransactionError::Abort(Abort::Duplicate(job))) => Err(JobStoreError::Duplicate(job)),
        Err(TransactionError::Abort(Abort::TooMany(limit))) => {
            Err(JobStoreError::TooManyInFlight { limit })
        }
        Err(TransactionError::Abort(Abort::Corrupt(e))) => Err(backend(e)),
        Err(TransactionError::Storage(e)) => Err(backend(e)),
    }
}

impl Trees {
    /// Runs `op` in one transaction over the six trees.
    fn transact<T>(
        &self,
        id: QueryId,
        op: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, JobStoreError> {
        let r = (
            &self.jobs,
            &self.queue,
            &self.leases,
            &self.in_flight,
            &self.keys,
            &self.tombstones,
            &self.callbacks,
        )
            .transaction(
                |(jobs, queue, leases, in_flight, keys, tombstones, callbacks)| {
                    op(&Tx {
                        jobs,
                        queue,
                        leases,
                        in_flight,
                        keys,
                        tombstones,
                        callbacks,
                    })
                },
            );
        map_tx(id, r)
    }

    /// Claims the job `id` (found through an index) if it is still claimable.
    fn try_claim(
        &self,
        id: QueryId,
        now: Timestamp,
        lease: Lease,
    ) -> Result<Option<Job>, JobStoreError> {
        self.transact(id, |tx| {
            let Some(before) = tx.get(id)? else {
                return Ok(None);
            };
            let mut job = before.clone();
            if job.claim(lease, now).is_err() {
                return Ok(None);
            }
            tx.write(Some(&before), Some(&job))?;
            Ok(Some(job))
        })
    }
}

/// Opens the sled database in `dir`. sled's background threads release the directory's lock
/// a moment after the last handle of a closed store is dropped, so a lock held by this process
/// a moment ago is waited for (up to two seconds); a lock another live process holds still
/// fails, with sled's message.
fn open_db(dir: &Path) -> Result<sled::Db, JobStoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(backend(e)),
        }
    }
}

impl SledJobStore {
    /// Opens (or creates) the store in `dir`, returning it with the ids of the jobs it put back
    /// in the queue because the process that ran them died.
    pub fn open(dir: &Path) -> Result<(Self, Vec<QueryId>), JobStoreError> {
        let trees = Arc::new(open_trees(dir)?);
        let recovered = recover(&trees)?;
        let store = Self {
            handle: Arc::new(Handle {
                dir: dir.to_path_buf(),
                current: std::sync::Mutex::new(Some(trees)),
            }),
            events: EventHub::new(),
        };
        if !recovered.is_empty() {
            info!(
                count = recovered.len(),
                "requeued queries interrupted by the last shutdown"
            );
        }
        Ok((store, recovered))
    }
}

/// Opens the database and its trees in `dir`.
fn open_trees(dir: &Path) -> Result<Trees, JobStoreError> {
    let db = open_db(dir)?;
    let tree = |name: &str| db.open_tree(name).map_err(backend);
    Ok(Trees {
        jobs: tree("jobs")?,
        queue: tree("queue")?,
        leases: tree("leases")?,
        in_flight: tree("in_flight")?,
        keys: tree("keys")?,
        tombstones: tree("tombstones")?,
        callbacks: tree("callbacks")?,
        db,
    })
}

/// Requeues the jobs of a dead process and rebuilds the indexes from `jobs` (at start only:
/// a reopen after an I/O error finds this process's running jobs alive).
fn recover(t: &Trees) -> Result<Vec<QueryId>, JobStoreError> {
    let mut recovered = Vec::new();
    let mut jobs = Vec::new();
    for entry in t.jobs.iter() {
        let (_, bytes) = entry.map_err(backend)?;
        let mut job = decode(&bytes).map_err(backend)?;
        if matches!(job.state, JobState::Running { .. }) {
            job.requeue();
            recovered.push(job.id);
        }
        jobs.push(job);
    }
    for index in [&t.queue, &t.leases, &t.in_flight, &t.keys, &t.callbacks] {
        index.clear().map_err(backend)?;
    }
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for job in &jobs {
        if recovered.contains(&job.id) {
            let bytes = serde_json::to_vec(job).map_err(backend)?;
            t.jobs.insert(job.id.as_bytes(), bytes).map_err(backend)?;
        }
        if matches!(job.state, JobState::Queued) {
            t.queue
                .insert(queue_key(job), &job.id.as_bytes()[..])
                .map_err(backend)?;
        }
        if let Some(key) = callback_key(job) {
            t.callbacks
                .insert(key, &job.id.as_bytes()[..])
                .map_err(backend)?;
        }
        if !job.is_finished() {
            *counts.entry(job.owner.as_str()).or_insert(0) += 1;
        }
    }
    // Each key names its newest holder.
    let mut holders: HashMap<Vec<u8>, &Job> = HashMap::new();
    for job in &jobs {
        if let Some(key) = idempotency_key(job) {
            let newest = holders.entry(key).or_insert(job);
            if (job.submitted_at, job.id) > (newest.submitted_at, newest.id) {
                *newest = job;
            }
        }
    }
    for (key, job) in holders {
        t.keys
            .insert(key, &job.id.as_bytes()[..])
            .map_err(backend)?;
    }
    for (owner, n) in counts {
        t.in_flight
            .insert(owner.as_bytes(), &n.to_be_bytes())
            .map_err(backend)?;
    }
    t.db.flush().map_err(backend)?;
    Ok(recovered)
}

impl SledJobStore {
    /// Runs a blocking sled operation off the reactor, flushes it to disk, then publishes what
    /// it announces.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Trees) -> Result<(T, Option<JobEvent>), JobStoreError> + Send + 'static,
    ) -> Result<T, JobStoreError> {
        let handle = Arc::clone(&self.handle);
        let (value, event) = tokio::task::spawn_blocking(move || {
            let trees = handle.trees()?;
            let done = op(&trees).and_then(|value| {
                trees.db.flush().map_err(backend)?;
                Ok(value)
            });
            handle.check(&trees, done)
        })
        .await
        .map_err(JobStoreError::backend)??;
        if let Some(event) = event {
            self.events.publish(event);
        }
        Ok(value)
    }

    /// Runs a read-only sled operation off the reactor.
    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Trees) -> Result<T, JobStoreError> + Send + 'static,
    ) -> Result<T, JobStoreError> {
        let handle = Arc::clone(&self.handle);
        tokio::task::spawn_blocking(move || {
            let trees = handle.trees()?;
            let done = op(&trees);
            handle.check(&trees, done)
        })
        .await
        .map_err(JobStoreError::backend)?
    }
}

#[async_trait]
impl JobStore for SledJobStore {
    async fn insert(&self, job: &Job, max_in_flight: Option<usize>) -> Result<(), JobStoreError> {
        let job = job.clone();
        let dir = self.handle.dir.clone();
        // A query whose write does not reach the disk is not stored: sled fails the flush, the
        // broken instance is let go, and the reopened one holds what reached the disk. Before
        // that, a disk with less than the reserve left refuses new queries, so the space that
        // remains serves the queries already taken (their claims and outcomes).
        self.blocking(move |t| {
            let free = fs2::available_space(&dir).map_err(backend_io)?;
            if free < SPACE_RESERVE {
                return Err(JobStoreError::backend(SledError::Full(
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!(
                            "{free} bytes free on its disk, less than the {SPACE_RESERVE} it keeps \
                         for the queries it runs"
                        ),
                    ),
                )));
            }
            t.transact(job.id, |tx| {
                if tx.get(job.id)?.is_some() {
                    return abort(Abort::Exists);
                }
                if let (Some(entry), Some(given)) = (idempotency_key(&job), &job.idempotency)
                    && let Some(id) = tx.keys.get(&entry)?
                    && let Some(held) = id_from(&id).map(|id| tx.get(id)).transpose()?.flatten()
                    && held.holds_key(&given.key, job.submitted_at)
                {
                    return abort(Abort::Duplicate(Box::new(held)));
                }
                if let Some(limit) = max_in_flight
                    && tx.in_flight_of(&job.owner)? >= limit as u64
                {
                    return abort(Abort::TooMany(limit));
                }
                tx.write(None, Some(&job))
            })?;
            Ok(((), Some(JobEvent::Queued)))
        })
        .await
    }

    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        self.read(move |t| match t.jobs.get(id.as_bytes()).map_err(backend)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(backend)?)),
            None => Ok(None),
        })
        .await
    }

    async fn get_many(&self, ids: &[QueryId]) -> Result<HashMap<QueryId, Job>, JobStoreError> {
        let ids = ids.to_vec();
        self.read(move |t| {
            let mut found = HashMap::new();
            for id in ids {
                if let Some(bytes) = t.jobs.get(id.as_bytes()).map_err(backend)? {
                    found.insert(id, decode(&bytes).map_err(backend)?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError> {
        self.blocking(move |t| {
            // Another worker may take an entry between our read and our transaction; then the
            // transaction finds the job no longer claimable and we move on to the next one.
            // Lapsed leases first: their jobs have waited longest.
            let lapsed_until = index_key(now, QueryId::from_bytes([0xff; 16]));
            for entry in t.leases.range(..=&lapsed_until[..]) {
                let (_, id) = entry.map_err(backend)?;
                if let Some(id) = id_from(&id)
                    && let Some(job) = t.try_claim(id, now, lease)?
                {
                    return Ok((Some(job), None));
                }
            }
            for entry in t.queue.iter() {
                let (_, id) = entry.map_err(backend)?;
                if let Some(id) = id_from(&id)
                    && let Some(job) = t.try_claim(id, now, lease)?
                {
                    return Ok((Some(job), None));
                }
            }
            Ok((None, None))
        })
        .await
    }

    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
        progress: Progress,
    ) -> Result<Renewal, JobStoreError> {
        self.blocking(move |t| {
            let renewal = t.transact(id, |tx| {
                let before = tx.existing(id)?;
                let mut job = before.clone();
                if job.renew(token, expires_at, progress).is_err() {
                    return abort(Abort::LeaseLost);
                }
                tx.write(Some(&before), Some(&job))?;
                Ok(Renewal {
                    stop_requested: job.stop_requested(),
                })
            })?;
            Ok((renewal, None))
        })
        .await
    }

    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        self.blocking(move |t| {
            let job = t.transact(id, |tx| {
                let before = tx.existing(id)?;
                let mut job = before.clone();
                if job.finish(token, outcome.clone()).is_err() {
                    return abort(Abort::LeaseLost);
                }
                tx.write(Some(&before), Some(&job))?;
                Ok(job)
            })?;
            Ok((job, Some(JobEvent::Finished(id))))
        })
        .await
    }

    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        self.blocking(move |t| {
            let released = t.transact(id, |tx| {
                let Some(before) = tx.get(id)? else {
                    return Ok(false);
                };
                match &before.state {
                    JobState::Running { lease, .. } if lease.token == token => {}
                    _ => return Ok(false),
                }
                let mut job = before.clone();
                job.requeue();
                tx.write(Some(&before), Some(&job))?;
                Ok(true)
            })?;
            Ok(((), released.then_some(JobEvent::Queued)))
        })
        .await
    }

    async fn stop(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Stopped, JobStoreError> {
        self.blocking(move |t| {
            let (effect, job) = t.transact(id, |tx| {
                let before = tx.existing(id)?;
                let mut job = before.clone();
                let effect = match job.request_stop(now, outcome.clone()) {
                    Ok(effect) => effect,
                    Err(_) => return abort(Abort::Finished(Box::new(before))),
                };
                tx.write(Some(&before), Some(&job))?;
                Ok((effect, job))
            })?;
            Ok(match effect {
                StopEffect::Ended => (Stopped::Ended(job), Some(JobEvent::Finished(id))),
                StopEffect::Requested => {
                    (Stopped::Requested(job), Some(JobEvent::StopRequested(id)))
                }
            })
        })
        .await
    }

    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        self.blocking(move |t| {
            let gone = t.transact(id, |tx| {
                let Some(before) = tx.get(id)? else {
                    return Ok(None);
                };
                tx.write(Some(&before), None)?;
                Ok(Some(before))
            })?;
            Ok((gone, None))
        })
        .await
    }

    async fn queued_ahead(&self, job: &Job) -> Result<u64, JobStoreError> {
        let handle = Arc::clone(&self.handle);
        let key = queue_key(job);
        tokio::task::spawn_blocking(move || {
            let ahead = handle.trees()?.queue.range(..&key[..]).count();
            Ok(u64::try_from(ahead).unwrap_or(u64::MAX))
        })
        .await
        .map_err(JobStoreError::backend)?
    }

    async fn expire(
        &self,
        id: QueryId,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        self.blocking(move |t| {
            let gone = t.transact(id, |tx| {
                let Some(before) = tx.get(id)? else {
                    return Ok(None);
                };
                tx.write(Some(&before), None)?;
                let tombstone = Tombstone {
                    id,
                    owner: before.owner.clone(),
                    expired_at: at,
                    keep_until,
                };
                let bytes = serde_json::to_vec(&tombstone)
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?;
                tx.tombstones.insert(&id.as_bytes()[..], bytes)?;
                Ok(Some(before))
            })?;
            Ok((gone, None))
        })
        .await
    }

    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, JobStoreError> {
        // Every entry up to `now` (whatever the id), soonest first.
        let mut until = [0xff_u8; 24];
        until[..8].copy_from_slice(&time_bytes(now));
        self.read(move |t| {
            let mut due = Vec::new();
            for entry in t.callbacks.range(..=&until[..]).take(limit) {
                let (_, id) = entry.map_err(backend)?;
                let Some(id) = id_from(&id) else { continue };
                if let Some(bytes) = t.jobs.get(id.as_bytes()).map_err(backend)? {
                    due.push(decode(&bytes).map_err(backend)?);
                }
            }
            Ok(due)
        })
        .await
    }

    async fn update_callback(
        &self,
        id: QueryId,
        expected: &CallbackState,
        next: CallbackState,
    ) -> Result<bool, JobStoreError> {
        let expected = expected.clone();
        self.blocking(move |t| {
            let changed = t.transact(id, |tx| {
                let before = tx.existing(id)?;
                let mut job = before.clone();
                if !job.advance_callback(&expected, next.clone()) {
                    return Ok(false);
                }
                tx.write(Some(&before), Some(&job))?;
                Ok(true)
            })?;
            Ok((changed, None))
        })
        .await
    }

    async fn tombstone(&self, id: QueryId) -> Result<Option<Tombstone>, JobStoreError> {
        self.read(
            move |t| match t.tombstones.get(id.as_bytes()).map_err(backend)? {
                Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(backend)?)),
                None => Ok(None),
            },
        )
        .await
    }

    async fn forget_tombstones(&self, now: Timestamp) -> Result<usize, JobStoreError> {
        self.blocking(move |t| {
            let mut forgotten = 0;
            for entry in t.tombstones.iter() {
                let (key, bytes) = entry.map_err(backend)?;
                let tombstone: Tombstone = serde_json::from_slice(&bytes).map_err(backend)?;
                if tombstone.keep_until < now {
                    t.tombstones.remove(key).map_err(backend)?;
                    forgotten += 1;
                }
            }
            Ok((forgotten, None))
        })
        .await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobStoreError> {
        let filter = filter.clone();
        self.read(move |t| {
            let mut jobs = Vec::new();
            for entry in t.jobs.iter() {
                let (_, bytes) = entry.map_err(backend)?;
                let job = decode(&bytes).map_err(backend)?;
                if filter.matches(&job) {
                    jobs.push(job);
                }
            }
            jobs.sort_by_key(|j| (j.submitted_at, j.id));
            Ok(jobs)
        })
        .await
    }

    fn events(&self) -> BoxStream<'static, JobEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests;
