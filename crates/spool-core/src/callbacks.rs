//! Completion webhooks: the durable state machine of each delivery. The job store keeps where
//! each delivery stands (`CallbackState`), so a delivery survives restarts and any process may
//! make the next attempt; an attempt is claimed in the store first (compare-and-set), so one
//! process makes it. Sending is the caller's (the HTTP shell renders and signs the status).

use std::sync::Arc;
use std::time::Duration;

use spool_domain::{CallbackState, Job, Timestamp};
use tokio::sync::Notify;

use crate::{ServiceError, Spool};

/// How long after a query's end its webhook is retried.
pub const CALLBACK_WINDOW: Duration = Duration::from_secs(3600);

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One attempt this process has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedCallback {
    /// The finished job.
    pub job: Job,
    /// Where to POST.
    pub url: String,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The state the claim left, which the outcome replaces.
    claimed: CallbackState,
}

/// The pause before attempt `n + 1`: 1 s, 2 s, 4 s, ... at most five minutes.
fn backoff(attempt: u32) -> Duration {
    let secs = 1_u64 << attempt.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Spool {
    /// Wakes when a query ends (in any process sharing the job store): time to look for due
    /// webhooks.
    pub fn callbacks_wakeup(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.callbacks_due)
    }

    /// Claims up to `limit` due webhook attempts for this process: each is recorded as made
    /// (with the next one scheduled after a backoff) before it is handed out, so a crash
    /// mid-attempt leads to a retry, and two processes never make the same attempt.
    pub async fn claim_callbacks(
        &self,
        limit: usize,
    ) -> Result<Vec<ClaimedCallback>, ServiceError> {
        let ports = &self.inner.ports;
        let now = ports.clock.now();
        let mut claimed = Vec::new();
        for job in ports.jobs.callbacks_due(now, limit).await? {
            let Some(callback) = &job.callback else {
                continue;
            };
            let CallbackState::Pending { attempts, .. } = callback.state else {
                continue;
            };
            let attempt = attempts + 1;
            let next = CallbackState::Pending {
                attempts: attempt,
                next_at: now.plus_millis(millis(backoff(attempt))),
            };
            match ports
                .jobs
                .update_callback(job.id, &callback.state, next.clone())
                .await
            {
                Ok(true) => claimed.push(ClaimedCallback {
                    url: callback.url.clone(),
                    job: job.clone(),
                    attempt,
                    claimed: next,
                }),
                Ok(false) | Err(spool_ports::JobStoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(claimed)
    }

    /// Records how a claimed attempt went: delivered, or (an hour after the query ended)
    /// abandoned; a failure within the hour leaves the retry the claim scheduled.
    pub async fn record_callback(
        &self,
        claimed: &ClaimedCallback,
        outcome: Result<(), String>,
    ) -> Result<(), ServiceError> {
        let ports = &self.inner.ports;
        let now = ports.clock.now();
        let ended = claimed
            .job
            .finished_at()
            .unwrap_or(claimed.job.submitted_at);
        let next = match outcome {
            Ok(()) => CallbackState::Delivered {
                at: now,
                attempts: claimed.attempt,
            },
            Err(error) if now >= ended.plus_millis(millis(CALLBACK_WINDOW)) => {
                CallbackState::Abandoned {
                    at: now,
                    attempts: claimed.attempt,
                    error,
                }
            }
            Err(_) => return Ok(()),
        };
        match ports
            .jobs
            .update_callback(claimed.job.id, &claimed.claimed, next)
            .await
        {
            Ok(_) | Err(spool_ports::JobStoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// When the next due attempt is, for sleeping until it: the soonest pending retry.
    pub async fn next_callback_at(&self) -> Result<Option<Timestamp>, ServiceError> {
        let far = Timestamp::from_millis(i64::MAX);
        let due = self.inner.ports.jobs.callbacks_due(far, 1).await?;
        Ok(due.first().and_then(|job| match &job.callback {
            Some(spool_domain::Callback {
                state: CallbackState::Pending { next_at, .. },
                ..
            }) => Some(*next_at),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_to_five_minutes() {
        let pauses: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            pauses,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
    }
}
