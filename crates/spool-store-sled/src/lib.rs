//! The job store on sled, an embedded transactional key-value store.
//!
//! Layout: tree `jobs` maps the 16 id bytes to the job as JSON; tree `queue` holds one key per
//! queued job, `submitted_at (8 bytes, big-endian) ++ id`, so claiming takes the oldest first.
//!
//! Invariants:
//! - A job is in `queue` exactly when its state is `Queued`; both trees change in one
//!   transaction.
//! - Every change is flushed to disk before the call returns.
//! - sled locks its directory, so one process owns the store. Any job found `Running` when the
//!   store opens was held by a process that died; [`SledJobStore::open`] puts it back in the queue.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use spool_domain::{Job, JobState, Lease, LeaseToken, QueryId, Timestamp};
use spool_ports::{JobStore, JobStoreError};
use tracing::info;

/// A [`JobStore`] in a sled database directory.
#[derive(Clone)]
pub struct SledJobStore {
    inner: Arc<Trees>,
}

struct Trees {
    db: sled::Db,
    jobs: sled::Tree,
    queue: sled::Tree,
}

/// Errors local to this adapter, wrapped as [`JobStoreError::Backend`].
#[derive(Debug, thiserror::Error)]
enum SledError {
    #[error("sled failure")]
    Sled(#[from] sled::Error),
    #[error("job record is corrupt")]
    Corrupt(#[from] serde_json::Error),
}

fn backend(e: impl Into<SledError>) -> JobStoreError {
    JobStoreError::Backend(Box::new(e.into()))
}

fn queue_key(job: &Job) -> [u8; 24] {
    let mut key = [0u8; 24];
    // Offset so that negative timestamps still sort before positive ones.
    let t = (job.submitted_at.as_millis() as u64) ^ (1 << 63);
    key[..8].copy_from_slice(&t.to_be_bytes());
    key[8..].copy_from_slice(job.id.as_bytes());
    key
}

fn decode(bytes: &[u8]) -> Result<Job, SledError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// How an operation inside a transaction ended, when it did not commit.
enum Abort {
    NotFound,
    Exists,
    LeaseLost,
    Corrupt(serde_json::Error),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

fn tx_get(tree: &sled::transaction::TransactionalTree, id: QueryId) -> TxResult<Job> {
    let bytes = tree
        .get(id.as_bytes())?
        .ok_or(ConflictableTransactionError::Abort(Abort::NotFound))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))
}

fn tx_put(tree: &sled::transaction::TransactionalTree, job: &Job) -> TxResult<()> {
    let bytes = serde_json::to_vec(job)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?;
    tree.insert(&job.id.as_bytes()[..], bytes)?;
    Ok(())
}

fn map_tx<T>(id: QueryId, r: Result<T, TransactionError<Abort>>) -> Result<T, JobStoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(Abort::NotFound)) => Err(JobStoreError::NotFound(id)),
        Err(TransactionError::Abort(Abort::Exists)) => Err(JobStoreError::AlreadyExists(id)),
        Err(TransactionError::Abort(Abort::LeaseLost)) => Err(JobStoreError::LeaseLost(id)),
        Err(TransactionError::Abort(Abort::Corrupt(e))) => Err(backend(e)),
        Err(TransactionError::Storage(e)) => Err(backend(e)),
    }
}

impl SledJobStore {
    /// Opens (or creates) the store in `dir`, returning it with the ids of the jobs it put back
    /// in the queue because the process that ran them died.
    pub fn open(dir: &Path) -> Result<(Self, Vec<QueryId>), JobStoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(backend)?;
        let jobs = db.open_tree("jobs").map_err(backend)?;
        let queue = db.open_tree("queue").map_err(backend)?;
        let store = Self {
            inner: Arc::new(Trees { db, jobs, queue }),
        };
        let recovered = store.requeue_orphans()?;
        if !recovered.is_empty() {
            info!(
                count = recovered.len(),
                "requeued queries interrupted by the last shutdown"
            );
        }
        Ok((store, recovered))
    }

    fn requeue_orphans(&self) -> Result<Vec<QueryId>, JobStoreError> {
        let mut recovered = Vec::new();
        for entry in self.inner.jobs.iter() {
            let (_, bytes) = entry.map_err(backend)?;
            let job = decode(&bytes).map_err(backend)?;
            if matches!(job.state, JobState::Running { .. }) {
                let id = job.id;
                let r = (&self.inner.jobs, &self.inner.queue).transaction(|(jobs, queue)| {
                    let mut job = tx_get(jobs, id)?;
                    job.requeue();
                    tx_put(jobs, &job)?;
                    queue.insert(&queue_key(&job)[..], &id.as_bytes()[..])?;
                    Ok(())
                });
                map_tx(id, r)?;
                recovered.push(id);
            }
        }
        self.inner.db.flush().map_err(backend)?;
        Ok(recovered)
    }

    /// Runs a blocking sled operation off the reactor, then flushes it to disk.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Trees) -> Result<T, JobStoreError> + Send + 'static,
    ) -> Result<T, JobStoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let value = op(&inner)?;
            inner.db.flush().map_err(backend)?;
            Ok(value)
        })
        .await
        .map_err(|e| JobStoreError::Backend(Box::new(e)))?
    }

    /// Runs a read-only sled operation off the reactor.
    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Trees) -> Result<T, JobStoreError> + Send + 'static,
    ) -> Result<T, JobStoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| JobStoreError::Backend(Box::new(e)))?
    }
}

#[async_trait]
impl JobStore for SledJobStore {
    async fn insert(&self, job: &Job) -> Result<(), JobStoreError> {
        let job = job.clone();
        self.blocking(move |t| {
            let id = job.id;
            let r = (&t.jobs, &t.queue).transaction(|(jobs, queue)| {
                if jobs.get(id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Abort::Exists));
                }
                tx_put(jobs, &job)?;
                if matches!(job.state, JobState::Queued) {
                    queue.insert(&queue_key(&job)[..], &id.as_bytes()[..])?;
                }
                Ok(())
            });
            map_tx(id, r)
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

    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError> {
        self.blocking(move |t| {
            // Another worker may take the head between our read and our transaction; then the
            // transaction sees the queue entry gone and we move on to the next one.
            for entry in t.queue.iter() {
                let (key, id_bytes) = entry.map_err(backend)?;
                let Ok(bytes) = <[u8; 16]>::try_from(id_bytes.as_ref()) else {
                    continue;
                };
                let id = QueryId::from_bytes(bytes);
                let r = (&t.jobs, &t.queue).transaction(|(jobs, queue)| {
                    if queue.remove(&key)?.is_none() {
                        return Ok(None);
                    }
                    let mut job = match tx_get(jobs, id) {
                        Ok(job) => job,
                        // A queue entry without a job: drop the entry.
                        Err(ConflictableTransactionError::Abort(Abort::NotFound)) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    };
                    if job.claim(lease, now).is_err() {
                        return Ok(None);
                    }
                    tx_put(jobs, &job)?;
                    Ok(Some(job))
                });
                if let Some(job) = map_tx(id, r)? {
                    return Ok(Some(job));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
    ) -> Result<(), JobStoreError> {
        self.blocking(move |t| {
            let r = t.jobs.transaction(|jobs| {
                let mut job = tx_get(jobs, id)?;
                job.renew(token, expires_at)
                    .map_err(|_| ConflictableTransactionError::Abort(Abort::LeaseLost))?;
                tx_put(jobs, &job)
            });
            map_tx(id, r)
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
            let r = t.jobs.transaction(|jobs| {
                let mut job = tx_get(jobs, id)?;
                job.finish(token, outcome.clone())
                    .map_err(|_| ConflictableTransactionError::Abort(Abort::LeaseLost))?;
                tx_put(jobs, &job)?;
                Ok(job)
            });
            map_tx(id, r)
        })
        .await
    }

    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        self.blocking(move |t| {
            let r = (&t.jobs, &t.queue).transaction(|(jobs, queue)| {
                let mut job = match tx_get(jobs, id) {
                    Err(ConflictableTransactionError::Abort(Abort::NotFound)) => return Ok(()),
                    other => other?,
                };
                match &job.state {
                    JobState::Running { lease, .. } if lease.token == token => {}
                    _ => return Ok(()),
                }
                job.requeue();
                tx_put(jobs, &job)?;
                queue.insert(&queue_key(&job)[..], &id.as_bytes()[..])?;
                Ok(())
            });
            map_tx(id, r)
        })
        .await
    }

    async fn end_unclaimed(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        self.blocking(move |t| {
            let r = (&t.jobs, &t.queue).transaction(|(jobs, queue)| {
                let mut job = tx_get(jobs, id)?;
                let key = queue_key(&job);
                job.end_unclaimed(now, outcome.clone())
                    .map_err(|_| ConflictableTransactionError::Abort(Abort::LeaseLost))?;
                tx_put(jobs, &job)?;
                queue.remove(&key[..])?;
                Ok(job)
            });
            map_tx(id, r)
        })
        .await
    }

    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        self.blocking(move |t| {
            let r = (&t.jobs, &t.queue).transaction(|(jobs, queue)| {
                let job = match tx_get(jobs, id) {
                    Err(ConflictableTransactionError::Abort(Abort::NotFound)) => return Ok(None),
                    other => other?,
                };
                jobs.remove(&id.as_bytes()[..])?;
                queue.remove(&queue_key(&job)[..])?;
                Ok(Some(job))
            });
            map_tx(id, r)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Job>, JobStoreError> {
        self.read(|t| {
            let mut jobs = Vec::new();
            for entry in t.jobs.iter() {
                let (_, bytes) = entry.map_err(backend)?;
                jobs.push(decode(&bytes).map_err(backend)?);
            }
            jobs.sort_by_key(|j| (j.submitted_at, j.id));
            Ok(jobs)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
