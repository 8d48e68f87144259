//! A cancellation flag that blocking engine code can poll cheaply between batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Why a query was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The query was deleted; its outcome must not be recorded.
    Deleted,
    /// The server is shutting down; the query will run again after restart.
    Shutdown,
    /// A user asked for the query to stop.
    Stopped,
    /// The query ran past its time limit.
    TimedOut,
}

/// A shared, clonable flag: set once, observed by every clone.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicU8>);

impl CancelToken {
    /// Returns a token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels with `reason`; the first reason given wins.
    pub fn cancel(&self, reason: CancelReason) {
        let code = match reason {
            CancelReason::Deleted => 1,
            CancelReason::Shutdown => 2,
            CancelReason::Stopped => 3,
            CancelReason::TimedOut => 4,
        };
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Returns whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// Returns why cancellation was asked for, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(CancelReason::Deleted),
            2 => Some(CancelReason::Shutdown),
            3 => Some(CancelReason::Stopped),
            4 => Some(CancelReason::TimedOut),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_clones_see_it() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel(CancelReason::Deleted);
        a.cancel(CancelReason::Shutdown);
        assert_eq!(b.reason(), Some(CancelReason::Deleted));
    }
}
