//! Time and id generation, behind traits so tests can fix them.

use std::time::{SystemTime, UNIX_EPOCH};

use spool_domain::{QueryId, Timestamp};

/// Tells the current time.
pub trait Clock: Send + Sync {
    /// Returns the current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(millis)
    }
}

/// Issues query ids. Ids must be unique and hard to guess: they are the only handle a client has.
pub trait IdGenerator: Send + Sync {
    /// Returns a fresh id.
    fn next_id(&self) -> QueryId;
}

/// Random version 4 UUIDs from the operating system's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn next_id(&self) -> QueryId {
        QueryId::new_random()
    }
}
