//! What a client sees of a query beyond Kylin's status word, and waiting for a query to change
//! instead of polling it.
//!
//! A wait is woken by the end of the query itself: the job store's `Finished` event (from this
//! process's store, or every process's when they share one) reaches the events task, which
//! wakes the waiters of that id. A wait never sleeps in a loop; its timeout is its only timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use spool_domain::{
    FailureCode, Job, JobState, Lifecycle, Principal, Progress, PublicStatus, QueryId, Timestamp,
};
use tokio::sync::Notify;

use crate::{QueryStatus, ServiceError, Spool};

/// The longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The parts of a query's status beyond Kylin's `status` and `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusDetail {
    /// The finer state.
    pub state: Lifecycle,
    /// Queued jobs ahead of this one (0: next), while it is queued.
    pub queue_position: Option<u64>,
    /// Rows and bytes written so far (final once it succeeded).
    pub progress: Progress,
    /// When it was submitted.
    pub submitted_at: Timestamp,
    /// When its latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// From submission to the end, or to now while it runs.
    pub elapsed_ms: u64,
    /// When retention will remove it (finished queries, when retention is on).
    pub expires_at: Option<Timestamp>,
    /// Attempts so far (0 while it waits for its first).
    pub attempt: u32,
    /// Why it failed, for a failed query.
    pub failure: Option<FailureCode>,
    /// The result's SHA-256 (lowercase hex), for a succeeded query.
    pub sha256: Option<String>,
    /// The earlier query whose result this one reused.
    pub reused_from: Option<QueryId>,
    /// The result's size before compression, for a result stored compressed.
    pub uncompressed_bytes: Option<u64>,
}

/// The waiters of each query id in this process.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<QueryId, Weak<Notify>>>,
}

impl Waiters {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, Weak<Notify>>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notifier of `id`, shared by everyone waiting on it now.
    fn watch(&self, id: QueryId) -> Arc<Notify> {
        let mut map = self.map();
        if let Some(notify) = map.get(&id).and_then(Weak::upgrade) {
            return notify;
        }
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        map.insert(id, Arc::downgrade(&notify));
        notify
    }

    /// Wakes everyone waiting on `id`.
    pub(crate) fn wake(&self, id: QueryId) {
        let notify = self.map().remove(&id).and_then(|w| w.upgrade());
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

impl Spool {
    /// The detail of `job`'s status now.
    pub(crate) async fn detail(&self, job: &Job) -> Result<StatusDetail, ServiceError> {
        let now = self.inner.ports.clock.now();
        let queue_position = match job.state {
            JobState::Queued => Some(self.inner.ports.jobs.queued_ahead(job).await?),
            _ => None,
        };
        let finished_at = job.finished_at();
        let retention = self.inner.config.result_retention;
        Ok(StatusDetail {
            state: job.lifecycle(),
            queue_position,
            progress: job.progress,
            submitted_at: job.submitted_at,
            started_at: job.started_at,
            finished_at,
            elapsed_ms: finished_at.unwrap_or(now).millis_since(job.submitted_at),
            expires_at: finished_at.zip(retention).map(|(at, keep)| {
                at.plus_millis(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
            }),
            attempt: job.attempts,
            failure: job.failure(),
            sha256: match &job.state {
                JobState::Succeeded { sha256, .. } => sha256.clone(),
                _ => None,
            },
            reused_from: job.reused_from,
            uncompressed_bytes: match &job.state {
                JobState::Succeeded {
                    uncompressed_bytes, ..
                } => *uncompressed_bytes,
                _ => None,
            },
        })
    }

    /// Waits until the query's Kylin status is no longer `seen` (it ended, or it was deleted),
    /// or `timeout` (at most [`MAX_WAIT`]) passed, and returns its status then. Woken by the
    /// query's end, in whichever process it runs, within the job store's event latency.
    pub async fn wait_status(
        &self,
        who: &Principal,
        id: QueryId,
        seen: PublicStatus,
        timeout: Duration,
    ) -> Result<QueryStatus, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let notify = self.inner.waiters.watch(id);
            let ended = notify.notified();
            tokio::pin!(ended);
            // Registered before the read, so an end between the read and the wait is not lost.
            ended.as_mut().enable();
            let status = self.status(who, id).await?;
            if status.status != seen {
                return Ok(status);
            }
            tokio::select! {
                () = &mut ended => {}
                () = tokio::time::sleep_until(deadline) => return Ok(status),
            }
        }
    }
}
