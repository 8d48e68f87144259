//! The job record and its state machine.
//!
//! ```text
//!   submit ──► Queued ──claim──► Running ──succeed──► Succeeded
//!                ▲ │               │  │
//!                │ └───stop──┐     │  └──fail──► Failed
//!                └──requeue──┼─────┘               ▲
//!                            └─────────────────────┘
//! ```
//!
//! A stop of a queued job (or of one whose lease lapsed) ends it at once; a stop of a running
//! job is recorded on it (`stop_requested`) and its lease holder ends it.
//!
//! Invariants: a running job is owned by exactly one lease. Only the holder of the current lease
//! token may renew it or finish the job, so a worker whose lease was taken over (or whose job was
//! deleted) can never overwrite the outcome. Each claim is a new attempt with its own result key
//! ([`ResultKey`]); a succeeded job records which attempt's result it points to.

use serde::{Deserialize, Serialize};

use crate::{
    FailureCode, Lifecycle, Progress, QueryId, QueryRequest, ResultKey, STOPPED_BY_USER, Timestamp,
};

/// Proof that a worker holds a job; changes on every claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub u64);

/// A worker's time-limited claim on a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Identifies this claim.
    pub token: LeaseToken,
    /// When the claim lapses unless renewed.
    pub expires_at: Timestamp,
}

/// A result column: its name and its SQL type name as Kylin reports it (`BIGINT`, `VARCHAR`,
/// `DECIMAL(15,2)`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultColumn {
    /// The column name as the result carries it.
    pub name: String,
    /// The SQL type name.
    pub sql_type: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker holds the job under a lease.
    Running {
        /// The current claim.
        lease: Lease,
        /// When this attempt started.
        started_at: Timestamp,
        /// A user asked for the query to stop; the lease holder ends it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_requested: bool,
    },
    /// The result is complete and stored.
    Succeeded {
        /// When the result was committed.
        finished_at: Timestamp,
        /// Rows in the result.
        rows: u64,
        /// Bytes in the stored result file.
        bytes: u64,
        /// The result's columns with their SQL types (absent in records from before 0.1).
        #[serde(default)]
        columns: Vec<ResultColumn>,
        /// The attempt whose result this is (0 in records from before results were kept per
        /// attempt).
        #[serde(default)]
        attempt: u32,
        /// The SHA-256 of the stored result, lowercase hex, computed while it was written
        /// (absent in records from before digests).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// What a later identical query over unchanged tables may reuse this result under:
        /// the request's fingerprint and the tables' version when it ran (absent when the
        /// engine cannot tell a version).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reuse_key: Option<String>,
        /// The result's size before compression, for a result stored compressed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uncompressed_bytes: Option<u64>,
    },
    /// The query ended without a result.
    Failed {
        /// When it failed.
        finished_at: Timestamp,
        /// A reason the user can read.
        reason: String,
        /// Why, as a stable code (absent in records from before codes: see [`Job::failure`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<FailureCode>,
    },
}

impl JobState {
    /// A failure at `now` for `reason`, with its code.
    pub fn failed(now: Timestamp, code: FailureCode, reason: impl Into<String>) -> Self {
        Self::Failed {
            finished_at: now,
            reason: reason.into(),
            code: Some(code),
        }
    }

    /// What a user's stop ends a job with at `now`.
    pub fn stopped_by_user(now: Timestamp) -> Self {
        Self::failed(now, FailureCode::Cancelled, STOPPED_BY_USER)
    }
}

/// The kind of a [`JobState`], without its details: what stores index and listings filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// [`JobState::Queued`].
    Queued,
    /// [`JobState::Running`].
    Running,
    /// [`JobState::Succeeded`].
    Succeeded,
    /// [`JobState::Failed`] (stopped queries included).
    Failed,
}

impl StateKind {
    /// The kind whose [`StateKind::as_str`] name is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// The lower-case name stores keep (`queued`, `running`, `succeeded`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl JobState {
    /// This state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Queued => StateKind::Queued,
            Self::Running { .. } => StateKind::Running,
            Self::Succeeded { .. } => StateKind::Succeeded,
            Self::Failed { .. } => StateKind::Failed,
        }
    }
}

/// The four statuses of Kylin's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PublicStatus {
    /// Queued or running.
    Running,
    /// Finished with a result to download.
    Successful,
    /// Finished without a result.
    Failed,
    /// Never issued, deleted, or not visible to the caller.
    Missing,
}

/// A state change that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The job is not running under the given lease (finished, requeued, or claimed by another).
    #[error("job {0} is not held under this lease")]
    LeaseLost(QueryId),
    /// The job cannot be claimed: it is finished or held under a live lease.
    #[error("job {0} cannot be claimed in its current state")]
    NotClaimable(QueryId),
    /// The job has already finished.
    #[error("job {0} has already finished")]
    Finished(QueryId),
}

/// What a stop request did to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEffect {
    /// No worker held the job; it has ended with the stop's outcome.
    Ended,
    /// A worker holds the job; the request is recorded and that worker ends it.
    Requested,
}

/// One submitted query and everything Spool knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The id handed to the client.
    pub id: QueryId,
    /// The user who submitted it.
    pub owner: String,
    /// What was asked.
    pub request: QueryRequest,
    /// When it was accepted.
    pub submitted_at: Timestamp,
    /// How many times a worker has claimed it.
    pub attempts: u32,
    /// How many of those claims a worker gave back at a graceful shutdown ([`Job::requeue`]):
    /// not the query's doing, so they do not count towards the attempts it may use up.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub released: u32,
    /// Where it is now.
    pub state: JobState,
    /// When the latest attempt started (absent before the first claim, and in records from
    /// before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// What the latest attempt has written so far: reported while it runs, final once it
    /// succeeded.
    #[serde(default)]
    pub progress: Progress,
    /// The client's idempotency key, if it gave one: a second submission with the same key
    /// from the same owner within [`IDEMPOTENCY_WINDOW_MILLIS`] gets this job instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// The earlier query whose result this one's is a copy of (result reuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<QueryId>,
    /// Where to POST the final status when the job ends, and how far that delivery got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// The record's format ([`crate::JOB_FORMAT`] when this release wrote it; 1 for records
    /// from before formats were kept).
    #[serde(default = "crate::format::first")]
    pub format: u32,
}

/// A completion webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// The URL the final status is POSTed to.
    pub url: String,
    /// How far delivery got.
    pub state: CallbackState,
}

/// Where a webhook's delivery stands. Delivery starts when the job has finished; attempts are
/// spaced out and stop an hour after the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CallbackState {
    /// Not delivered yet: the next attempt is due at `next_at` (once the job has finished).
    Pending {
        /// Attempts made so far.
        attempts: u32,
        /// When the next attempt is due.
        next_at: Timestamp,
    },
    /// The receiver acknowledged it (a 2xx answer).
    Delivered {
        /// When.
        at: Timestamp,
        /// Attempts it took.
        attempts: u32,
    },
    /// Retried for an hour after the end without success.
    Abandoned {
        /// When delivery gave up.
        at: Timestamp,
        /// Attempts made.
        attempts: u32,
        /// What the last attempt met.
        error: String,
    },
}

impl Job {
    /// Moves the webhook's state from `expected` to `next`; `false` (and no change) if it is
    /// not `expected` (another process moved it first) or there is no webhook.
    pub fn advance_callback(&mut self, expected: &CallbackState, next: CallbackState) -> bool {
        match &mut self.callback {
            Some(callback) if callback.state == *expected => {
                callback.state = next;
                true
            }
            _ => false,
        }
    }

    /// Whether this job's webhook is due at `now`: finished, pending, its time come.
    pub fn callback_due(&self, now: Timestamp) -> bool {
        self.is_finished()
            && matches!(
                self.callback,
                Some(Callback {
                    state: CallbackState::Pending { next_at, .. },
                    ..
                }) if next_at <= now
            )
    }
}

/// What is left of a query that retention removed: enough to tell its owner it expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The query.
    pub id: QueryId,
    /// Its owner (only they and admins are told).
    pub owner: String,
    /// When retention removed it.
    pub expired_at: Timestamp,
    /// When the tombstone itself goes.
    pub keep_until: Timestamp,
}

/// How long an idempotency key holds: 24 hours from the first submission.
pub const IDEMPOTENCY_WINDOW_MILLIS: i64 = 24 * 3600 * 1000;

/// A client's idempotency key and what it was first sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The key as the client sent it.
    pub key: String,
    /// A fingerprint of the request first submitted with it: a repeat must match.
    pub fingerprint: String,
}

impl Job {
    /// Whether this job holds `key` for its owner at `now` (within the window).
    pub fn holds_key(&self, key: &str, now: Timestamp) -> bool {
        self.idempotency.as_ref().is_some_and(|i| i.key == key)
            && now.millis_since(self.submitted_at) < IDEMPOTENCY_WINDOW_MILLIS.unsigned_abs()
    }
}

/// Serde's test for leaving a zero count out of a record.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Job {
    /// Returns a new queued job.
    pub fn new(id: QueryId, owner: String, request: QueryRequest, now: Timestamp) -> Self {
        Self {
            id,
            owner,
            request,
            submitted_at: now,
            attempts: 0,
            released: 0,
            state: JobState::Queued,
            started_at: None,
            progress: Progress::default(),
            idempotency: None,
            reused_from: None,
            callback: None,
            format: crate::JOB_FORMAT,
        }
    }

    /// Returns whether a worker may claim the job at `now`: queued, or running on a lapsed lease.
    pub fn is_claimable(&self, now: Timestamp) -> bool {
        match &self.state {
            JobState::Queued => true,
            JobState::Running { lease, .. } => lease.expires_at <= now,
            JobState::Succeeded { .. } | JobState::Failed { .. } => false,
        }
    }

    /// Returns whether the job has reached an end state.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            JobState::Succeeded { .. } | JobState::Failed { .. }
        )
    }

    /// Hands the job to a worker under `lease`.
    pub fn claim(&mut self, lease: Lease, now: Timestamp) -> Result<(), TransitionError> {
        if !self.is_claimable(now) {
            return Err(TransitionError::NotClaimable(self.id));
        }
        self.attempts = self.attempts.saturating_add(1);
        self.state = JobState::Running {
            lease,
            started_at: now,
            stop_requested: false,
        };
        self.started_at = Some(now);
        self.progress = Progress::default();
        Ok(())
    }

    /// Returns the key of the current attempt's result: the one a running attempt writes, or
    /// the one a succeeded job points to. `None` before the first claim and after a failure.
    pub fn result_key(&self) -> Option<ResultKey> {
        match &self.state {
            JobState::Running { .. } => Some(ResultKey::new(self.id, self.attempts)),
            JobState::Succeeded { attempt, .. } => Some(ResultKey::new(self.id, *attempt)),
            JobState::Queued | JobState::Failed { .. } => None,
        }
    }

    /// Returns whether a user asked for this running job to stop.
    pub fn stop_requested(&self) -> bool {
        matches!(
            self.state,
            JobState::Running {
                stop_requested: true,
                ..
            }
        )
    }

    /// Stops the job at `now`: one that no worker holds ends with `outcome` at once; on one a
    /// worker holds, the request is recorded for that worker.
    pub fn request_stop(
        &mut self,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<StopEffect, TransitionError> {
        if self.is_finished() {
            return Err(TransitionError::Finished(self.id));
        }
        if self.is_claimable(now) {
            self.state = outcome;
            return Ok(StopEffect::Ended);
        }
        if let JobState::Running { stop_requested, .. } = &mut self.state {
            *stop_requested = true;
        }
        Ok(StopEffect::Requested)
    }

    /// Extends the lease held under `token` until `expires_at` and records the attempt's
    /// progress.
    pub fn renew(
        &mut self,
        token: LeaseToken,
        expires_at: Timestamp,
        progress: Progress,
    ) -> Result<(), TransitionError> {
        match &mut self.state {
            JobState::Running { lease, .. } if lease.token == token => {
                lease.expires_at = expires_at;
                self.progress = progress;
                Ok(())
            }
            _ => Err(TransitionError::LeaseLost(self.id)),
        }
    }

    /// Ends the job held under `token` with `outcome`.
    pub fn finish(&mut self, token: LeaseToken, outcome: JobState) -> Result<(), TransitionError> {
        debug_assert!(matches!(
            outcome,
            JobState::Succeeded { .. } | JobState::Failed { .. }
        ));
        match &self.state {
            JobState::Running { lease, .. } if lease.token == token => {
                if let JobState::Succeeded { rows, bytes, .. } = &outcome {
                    self.progress = Progress {
                        rows: *rows,
                        bytes: *bytes,
                    };
                }
                self.state = outcome;
                Ok(())
            }
            _ => Err(TransitionError::LeaseLost(self.id)),
        }
    }

    /// The finer state a client sees.
    pub fn lifecycle(&self) -> Lifecycle {
        match &self.state {
            JobState::Queued => Lifecycle::Queued,
            JobState::Running { .. } => Lifecycle::Running,
            JobState::Succeeded { .. } => Lifecycle::Succeeded,
            JobState::Failed { .. } => match self.failure() {
                Some(FailureCode::Cancelled) => Lifecycle::Cancelled,
                _ => Lifecycle::Failed,
            },
        }
    }

    /// Why a failed job failed (inferred from the reason for records from before codes).
    pub fn failure(&self) -> Option<FailureCode> {
        match &self.state {
            JobState::Failed { code, reason, .. } => {
                Some(code.unwrap_or_else(|| FailureCode::infer(reason)))
            }
            _ => None,
        }
    }

    /// Returns when the job finished, if it has.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match &self.state {
            JobState::Succeeded { finished_at, .. } | JobState::Failed { finished_at, .. } => {
                Some(*finished_at)
            }
            _ => None,
        }
    }

    /// Puts a running job back in the queue (its worker gave it back, at a graceful shutdown);
    /// other states are unchanged. The claim is counted as released, not as interrupted.
    pub fn requeue(&mut self) {
        if matches!(self.state, JobState::Running { .. }) {
            self.state = JobState::Queued;
            self.released = self.released.saturating_add(1);
        }
    }

    /// The claims that count towards the attempts a job may use up: every claim but those
    /// given back at a graceful shutdown.
    pub fn counted_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.released)
    }

    /// Returns the status and info text that Kylin's status call reports.
    pub fn public_status(&self) -> (PublicStatus, String) {
        match &self.state {
            JobState::Queued => (PublicStatus::Running, "queued, waiting for a worker".into()),
            JobState::Running { .. } => (PublicStatus::Running, "still running".into()),
            JobState::Succeeded { .. } => {
                (PublicStatus::Successful, "await fetching results".into())
            }
            JobState::Failed { reason, .. } => (PublicStatus::Failed, reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProjectName;

    fn job() -> Job {
        let req = QueryRequest {
            sql: "select 1".into(),
            project: ProjectName::default_project(),
            offset: None,
            limit: None,
            output: Default::default(),
        };
        Job::new(
            QueryId::new_random(),
            "ADMIN".into(),
            req,
            Timestamp::from_millis(1_000),
        )
    }

    fn lease(token: u64, until: i64) -> Lease {
        Lease {
            token: LeaseToken(token),
            expires_at: Timestamp::from_millis(until),
        }
    }

    fn done() -> JobState {
        JobState::Succeeded {
            finished_at: Timestamp::from_millis(3_000),
            rows: 1,
            bytes: 2,
            columns: Vec::new(),
            attempt: 1,
            sha256: None,
            reuse_key: None,
            uncompressed_bytes: None,
        }
    }

    #[test]
    fn a_new_job_reports_running() {
        let j = job();
        assert_eq!(j.public_status().0, PublicStatus::Running);
        assert!(j.is_claimable(Timestamp::EPOCH));
    }

    #[test]
    fn claim_then_succeed() {
        let mut j = job();
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        assert_eq!(j.attempts, 1);
        assert_eq!(
            j.public_status(),
            (PublicStatus::Running, "still running".into())
        );
        j.finish(LeaseToken(1), done()).expect("finish");
        assert_eq!(
            j.public_status(),
            (PublicStatus::Successful, "await fetching results".into())
        );
        assert!(j.is_finished());
    }

    #[test]
    fn a_live_lease_cannot_be_claimed_but_a_lapsed_one_can() {
        let mut j = job();
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        assert_eq!(
            j.claim(lease(2, 9_000), Timestamp::from_millis(4_999)),
            Err(TransitionError::NotClaimable(j.id))
        );
        j.claim(lease(2, 9_000), Timestamp::from_millis(5_000))
            .expect("lapsed");
        assert_eq!(j.attempts, 2);
        // The first worker lost the job: it may neither renew nor finish it.
        assert!(
            j.renew(
                LeaseToken(1),
                Timestamp::from_millis(10_000),
                Progress::default()
            )
            .is_err()
        );
        assert!(j.finish(LeaseToken(1), done()).is_err());
        j.finish(LeaseToken(2), done())
            .expect("current holder finishes");
    }

    #[test]
    fn finished_jobs_stay_finished() {
        let mut j = job();
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        let failed = JobState::failed(
            Timestamp::from_millis(3_000),
            FailureCode::Execution,
            "boom",
        );
        j.finish(LeaseToken(1), failed).expect("fail");
        assert_eq!(j.public_status(), (PublicStatus::Failed, "boom".into()));
        assert_eq!(
            (j.lifecycle(), j.failure()),
            (Lifecycle::Failed, Some(FailureCode::Execution))
        );
        assert!(!j.is_claimable(Timestamp::from_millis(i64::MAX)));
        j.requeue();
        assert!(j.is_finished(), "requeue leaves a finished job alone");
        assert!(j.finish(LeaseToken(1), done()).is_err());
    }

    #[test]
    fn a_stop_is_cancelled_and_old_records_read_as_before() {
        let mut j = job();
        j.request_stop(
            Timestamp::from_millis(2_000),
            JobState::stopped_by_user(Timestamp::from_millis(2_000)),
        )
        .expect("stop");
        assert_eq!(j.lifecycle(), Lifecycle::Cancelled);
        assert_eq!(
            j.public_status(),
            (PublicStatus::Failed, "stopped by user".into())
        );
        // A record written before codes, progress and start times.
        let old = format!(
            r#"{{"id":"{}","owner":"ADMIN","request":{{"sql":"select 1","project":"ssb","offset":null,"limit":null}},"submitted_at":1000,"attempts":1,"state":{{"state":"failed","finished_at":3000,"reason":"stopped by user"}}}}"#,
            j.id
        );
        let read: Job = serde_json::from_str(&old).expect("an old record");
        assert_eq!(
            (read.lifecycle(), read.started_at, read.progress),
            (Lifecycle::Cancelled, None, Progress::default())
        );
    }

    #[test]
    fn renew_extends_the_lease() {
        let mut j = job();
        j.claim(lease(7, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        let progress = Progress { rows: 5, bytes: 40 };
        j.renew(LeaseToken(7), Timestamp::from_millis(8_000), progress)
            .expect("renew");
        assert!(!j.is_claimable(Timestamp::from_millis(7_999)));
        assert_eq!(
            (j.progress, j.started_at),
            (progress, Some(Timestamp::from_millis(2_000)))
        );
        assert!(
            j.renew(
                LeaseToken(8),
                Timestamp::from_millis(9_000),
                Progress::default()
            )
            .is_err()
        );
        assert_eq!(j.progress, progress, "a stale holder reports nothing");
    }

    #[test]
    fn requeue_returns_a_running_job_to_the_queue() {
        let mut j = job();
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        j.requeue();
        assert_eq!(j.state, JobState::Queued);
        j.requeue();
        j.claim(lease(2, 9_000), Timestamp::from_millis(3_000))
            .expect("claimed again");
        assert_eq!(
            (j.attempts, j.released, j.counted_attempts()),
            (2, 1, 1),
            "a claim given back once (a second requeue of a queued job is no claim) counts once"
        );
        let stored = serde_json::to_string(&j).expect("serializes");
        assert!(stored.contains(r#""released":1"#), "{stored}");
        let back: Job = serde_json::from_str(&stored).expect("parses");
        assert_eq!(back.counted_attempts(), 1);
    }

    #[test]
    fn a_stop_ends_an_unheld_job_and_is_recorded_on_a_held_one() {
        let stopped = || JobState::stopped_by_user(Timestamp::from_millis(3_000));
        let mut queued = job();
        assert_eq!(
            queued.request_stop(Timestamp::from_millis(2_000), stopped()),
            Ok(StopEffect::Ended)
        );
        assert!(queued.is_finished());
        assert_eq!(
            queued.request_stop(Timestamp::from_millis(2_000), stopped()),
            Err(TransitionError::Finished(queued.id))
        );

        let mut held = job();
        held.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        assert_eq!(
            held.request_stop(Timestamp::from_millis(2_500), stopped()),
            Ok(StopEffect::Requested)
        );
        assert!(held.stop_requested() && !held.is_finished());
        // The request survives a renewal, and a lapsed lease ends the job at the next stop.
        held.renew(
            LeaseToken(1),
            Timestamp::from_millis(6_000),
            Progress::default(),
        )
        .expect("renew");
        assert!(held.stop_requested());
        assert_eq!(
            held.request_stop(Timestamp::from_millis(6_000), stopped()),
            Ok(StopEffect::Ended)
        );
    }

    #[test]
    fn each_attempt_has_its_own_result_key() {
        let mut j = job();
        assert_eq!(j.result_key(), None);
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        assert_eq!(j.result_key(), Some(ResultKey::new(j.id, 1)));
        j.claim(lease(2, 9_000), Timestamp::from_millis(6_000))
            .expect("lapsed");
        assert_eq!(j.result_key(), Some(ResultKey::new(j.id, 2)));
        let mut done = done();
        if let JobState::Succeeded { attempt, .. } = &mut done {
            *attempt = 2;
        }
        j.finish(LeaseToken(2), done).expect("finish");
        assert_eq!(j.result_key(), Some(ResultKey::new(j.id, 2)));
    }

    #[test]
    fn records_from_before_attempts_and_stops_still_parse() {
        let j = job();
        let mut value = serde_json::to_value(&j).expect("serialize");
        value["state"] = serde_json::json!({
            "state": "succeeded", "finished_at": 5, "rows": 1, "bytes": 2
        });
        let old: Job = serde_json::from_value(value).expect("old record");
        assert_eq!(old.result_key(), Some(ResultKey::new(j.id, 0)));
    }

    #[test]
    fn records_survive_serialization() {
        let mut j = job();
        j.claim(lease(1, 5_000), Timestamp::from_millis(2_000))
            .expect("claim");
        let text = serde_json::to_string(&j).expect("serialize");
        assert_eq!(serde_json::from_str::<Job>(&text).expect("parse"), j);
    }
}
