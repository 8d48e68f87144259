//! Query ids: UUIDs that Spool issued. Parsing is strict so that an id taken from a URL can be
//! used as a storage key without ever becoming a path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifies one submitted query; the string form is a lowercase hyphenated UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueryId(uuid::Uuid);

/// The text given as a query id is not one that Spool could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query id is not a valid id")]
pub struct InvalidQueryId;

impl QueryId {
    /// Returns a fresh random (version 4) id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Wraps an existing UUID, for id generators and tests.
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }

    /// Returns the id's 16 bytes, suitable as an ordered storage key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from the bytes returned by [`QueryId::as_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl FromStr for QueryId {
    type Err = InvalidQueryId;

    /// Accepts only the canonical 36-character hyphenated form, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(InvalidQueryId);
        }
        uuid::Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| InvalidQueryId)
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryId({})", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = QueryId::new_random();
        assert_eq!(id.to_string().parse::<QueryId>(), Ok(id));
    }

    #[test]
    fn rejects_anything_but_a_hyphenated_uuid() {
        for bad in [
            "",
            "../../etc/passwd",
            "43eeb967e76a4214893270594d454013",
            "{43eeb967-e76a-4214-8932-70594d454013}",
            "urn:uuid:43eeb967-e76a-4214-8932-70594d454013",
            "43eeb967-e76a-4214-8932-70594d45401/",
            "43eeb967-e76a-4214-8932-70594d454013 ",
        ] {
            assert_eq!(bad.parse::<QueryId>(), Err(InvalidQueryId), "{bad:?}");
        }
    }

    #[test]
    fn accepts_uppercase_and_prints_lowercase() {
        let id: QueryId = "43EEB967-E76A-4214-8932-70594D454013"
            .parse()
            .expect("valid");
        assert_eq!(id.to_string(), "43eeb967-e76a-4214-8932-70594d454013");
    }
}

/// Names one attempt's result of a query: the storage key of a result file or object.
///
/// Every claim of a job is a new attempt, and each attempt writes under its own key, so a
/// worker that lost its lease can delete what it wrote without touching the winner's result.
/// Attempt 0 names results stored before keys had attempts (their text form is the bare id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultKey {
    /// The query.
    pub query: QueryId,
    /// The attempt that wrote the result (the job's claim count when it ran).
    pub attempt: u32,
}

impl ResultKey {
    /// The key of attempt `attempt` of `query`.
    pub fn new(query: QueryId, attempt: u32) -> Self {
        Self { query, attempt }
    }
}

impl fmt::Display for ResultKey {
    /// `<id>` for attempt 0, `<id>.<attempt>` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempt == 0 {
            fmt::Display::fmt(&self.query, f)
        } else {
            write!(f, "{}.{}", self.query, self.attempt)
        }
    }
}

impl FromStr for ResultKey {
    type Err = InvalidQueryId;

    /// Accepts exactly what [`ResultKey`]'s `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, attempt) = match s.split_once('.') {
            None => (s, 0),
            Some((id, n)) => {
                let canonical =
                    !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit());
                let attempt = n
                    .parse::<u32>()
                    .ok()
                    .filter(|_| canonical)
                    .ok_or(InvalidQueryId)?;
                (id, attempt)
            }
        };
        Ok(Self {
            query: id.parse()?,
            attempt,
        })
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn result_keys_round_trip_and_reject_other_names() {
        let id = QueryId::new_random();
        for key in [
            ResultKey::new(id, 0),
            ResultKey::new(id, 1),
            ResultKey::new(id, 42),
        ] {
            assert_eq!(key.to_string().parse::<ResultKey>(), Ok(key));
        }
        assert_eq!(ResultKey::new(id, 0).to_string(), id.to_string());
        for bad in [
            format!("{id}."),
            format!("{id}.01"),
            format!("{id}.x"),
            format!("{id}.1.2"),
            format!("{id}.0"),
        ] {
            assert_eq!(bad.parse::<ResultKey>(), Err(InvalidQueryId), "{bad}");
        }
    }
}
