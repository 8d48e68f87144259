//! What this process counts about the queries it runs, for the `/metrics` endpoint: plain
//! atomics and fixed-bucket histograms, nothing that allocates per observation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spool_domain::StateKind;

use crate::{ServiceError, Spool};

/// Upper bounds (seconds) of the query and queue-wait histograms: 5 ms to 30 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// A histogram with fixed bucket bounds (Prometheus' cumulative `le` buckets when read).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    counts: Vec<AtomicU64>,
    /// The sum of the observations, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(value.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The cumulative count of each bound, then the total count and the sum in seconds.
    pub fn read(&self) -> HistogramReading {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            running += count.load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        let count = running + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramReading {
            buckets,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    /// `(le, observations at or below it)`, ascending.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (`le="+Inf"`).
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// How a run in this process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A result was stored.
    Succeeded,
    /// The query failed.
    Failed,
    /// A user stopped it.
    Cancelled,
}

impl Outcome {
    /// The label value (`succeeded`, `failed`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    const ALL: [Self; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];
}

/// The counters of the queries this process ran.
#[derive(Debug)]
pub(crate) struct Metrics {
    finished: [AtomicU64; 3],
    /// From a worker's claim to the recorded outcome, one observation per finished run.
    pub(crate) run_time: Histogram,
    /// From submission to a worker's first claim.
    pub(crate) queue_wait: Histogram,
    pub(crate) rows: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            finished: Default::default(),
            run_time: Histogram::new(DURATION_BUCKETS),
            queue_wait: Histogram::new(DURATION_BUCKETS),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records a finished run: its outcome, how long it ran, what it wrote.
    pub(crate) fn finished(&self, outcome: Outcome, ran: Duration, rows: u64, bytes: u64) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.finished[i].fetch_add(1, Ordering::Relaxed);
        self.run_time.observe(ran);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What `/metrics` shows of the query service, read at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Jobs in the job store by state (every process's, for a shared store).
    pub jobs: HashMap<StateKind, u64>,
    /// Runs this process finished, by outcome.
    pub finished: Vec<(Outcome, u64)>,
    /// How long this process's runs took.
    pub run_time: HistogramReading,
    /// How long queries waited for this process's workers.
    pub queue_wait: HistogramReading,
    /// Result rows this process wrote.
    pub rows: u64,
    /// Result bytes this process wrote.
    pub bytes: u64,
    /// Queries this process runs now.
    pub workers_busy: usize,
    /// This process's workers.
    pub workers: usize,
}

impl Spool {
    /// Reads the query service's metrics: this process's counters and the job store's
    /// counts by state (one query of the store).
    pub async fn metrics(&self) -> Result<MetricsSnapshot, ServiceError> {
        let jobs = self.inner.ports.jobs.count_by_state().await?;
        let m = &self.inner.metrics;
        Ok(MetricsSnapshot {
            jobs,
            finished: Outcome::ALL
                .iter()
                .enumerate()
                .map(|(i, o)| (*o, m.finished[i].load(Ordering::Relaxed)))
                .collect(),
            run_time: m.run_time.read(),
            queue_wait: m.queue_wait.read(),
            rows: m.rows.load(Ordering::Relaxed),
            bytes: m.bytes.load(Ordering::Relaxed),
            workers_busy: self.running_count(),
            workers: self.inner.config.workers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_cumulatively_and_sum_in_seconds() {
        let h = Histogram::new(&[0.1, 1.0]);
        for ms in [50, 100, 500, 2_000] {
            h.observe(Duration::from_millis(ms));
        }
        let r = h.read();
        assert_eq!(r.buckets, vec![(0.1, 2), (1.0, 3)]);
        assert_eq!(r.count, 4);
        assert!((r.sum_seconds - 2.65).abs() < 1e-9, "{}", r.sum_seconds);
    }
}
