//! Record formats. Every stored record says which format it is in (`format`; records written
//! before formats were kept are format 1), and so does a data directory (its `FORMAT` file). A
//! release reads every format up to its own and refuses a newer one, leaving it untouched, so
//! that a downgrade never rewrites what a newer release wrote.

use serde::Deserialize;

/// The format of the job records this release writes.
pub const JOB_FORMAT: u32 = 1;

/// The format of the user records this release writes.
pub const USER_FORMAT: u32 = 1;

/// The format of the data directory layout this release writes (`<data dir>/FORMAT`).
pub const DATA_FORMAT: u32 = 1;

/// The format of a record that does not say: the first.
pub(crate) fn first() -> u32 {
    1
}

/// The `format` and `id` of a stored job record, read on their own when the record does not
/// decode (a newer release may have changed its other fields).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FormatPeek {
    /// The record's format.
    #[serde(default = "first")]
    pub format: u32,
    /// The record's id, when it has one.
    #[serde(default)]
    pub id: String,
}

/// A record (or data directory) written by a newer release than this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} was written by a newer Spool (format {found}; this release reads formats up to \
     {supported}) and was left as it is: run the release that wrote it, or a newer one"
)]
pub struct NewerFormat {
    /// What was read (`job record <id>`, `data directory <path>`).
    pub what: String,
    /// The format found.
    pub found: u32,
    /// The newest format this release reads.
    pub supported: u32,
}

/// Checks that `found` is a format this release reads (`supported` or older).
pub fn check_format(
    what: impl FnOnce() -> String,
    found: u32,
    supported: u32,
) -> Result<(), NewerFormat> {
    if found <= supported {
        Ok(())
    } else {
        Err(NewerFormat {
            what: what(),
            found,
            supported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_and_current_formats_pass_newer_ones_are_named() {
        assert!(check_format(|| "x".into(), 1, 1).is_ok());
        let e = check_format(|| "job record 7".into(), 3, 1).expect_err("newer");
        assert!(
            e.to_string()
                .starts_with("job record 7 was written by a newer Spool (format 3")
        );
    }
}
