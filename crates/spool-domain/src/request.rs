//! A query as the client asked for it, validated once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a project: letters, digits, `_` and `-`, at most 64 characters.
///
/// Validation keeps a project name safe to use as a folder name; whether the project exists is
/// decided later by the engine's catalog. Names compare as the catalog resolves them: without
/// regard to ASCII case (`SSB` is `ssb`), while the name keeps the spelling it was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

impl PartialEq for ProjectName {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for ProjectName {}

impl std::hash::Hash for ProjectName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

/// The project Kylin uses when a request names none.
pub const DEFAULT_PROJECT: &str = "DEFAULT";

impl ProjectName {
    /// Validates a project name.
    pub fn parse(name: &str) -> Result<Self, InvalidRequest> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !name.starts_with('-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidRequest::Project(name.chars().take(80).collect()))
        }
    }

    /// Returns the `DEFAULT` project.
    pub fn default_project() -> Self {
        Self(DEFAULT_PROJECT.to_owned())
    }

    /// Returns the name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectName {
    type Error = InvalidRequest;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProjectName> for String {
    fn from(value: ProjectName) -> Self {
        value.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated query submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The SQL text, as sent.
    pub sql: String,
    /// The project whose tables the SQL reads.
    pub project: ProjectName,
    /// Rows to skip, unless the SQL has its own OFFSET.
    pub offset: Option<u64>,
    /// Rows to return at most, unless the SQL has its own LIMIT; `None` means all rows.
    pub limit: Option<u64>,
    /// How the result is written (absent in records from before 0.2: the seed's CSV).
    #[serde(default)]
    pub output: crate::OutputSpec,
}

/// Why a submission was refused before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// The SQL text is empty or only whitespace.
    #[error("field 'sql' must not be empty")]
    EmptySql,
    /// The project name has characters a project name cannot have.
    #[error(
        "field 'project' is not a valid project name: {0:?} (letters, digits, '_' and '-', at most 64 characters)"
    )]
    Project(String),
}

impl QueryRequest {
    /// Validates the parts of a submission that do not need the catalog.
    ///
    /// A `limit` of zero means "no limit", as in Kylin.
    pub fn new(
        sql: String,
        project: Option<&str>,
        offset: Option<u64>,
        limit: Option<u64>,
    ) -> Result<Self, InvalidRequest> {
        if sql.trim().is_empty() {
            return Err(InvalidRequest::EmptySql);
        }
        let project = match project {
            None => ProjectName::default_project(),
            Some(p) => ProjectName::parse(p)?,
        };
        Ok(Self {
            sql,
            project,
            offset: offset.filter(|&o| o > 0),
            limit: limit.filter(|&l| l > 0),
            output: crate::OutputSpec::default(),
        })
    }

    /// Sets how the result is written.
    pub fn with_output(mut self, output: crate::OutputSpec) -> Self {
        self.output = output;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_folder_safe() {
        for good in ["ssb", "DEFAULT", "learn_kylin", "a-b", "x1"] {
            assert!(ProjectName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "..", "a/b", "a\\b", "-rf", "a b", "ü", &"x".repeat(65)] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_names_compare_as_the_catalog_resolves_them() {
        use std::collections::HashSet;
        let upper = ProjectName::parse("SSB").expect("valid");
        let lower = ProjectName::parse("ssb").expect("valid");
        assert_eq!(upper, lower);
        assert_eq!(upper.as_str(), "SSB", "the spelling given is kept");
        assert_eq!(HashSet::from([upper, lower.clone()]).len(), 1);
        assert_ne!(lower, ProjectName::parse("ssb2").expect("valid"));
    }

    #[test]
    fn defaults_follow_kylin() {
        let r = QueryRequest::new("select 1".into(), None, Some(0), Some(0)).expect("valid");
        assert_eq!(r.project.as_str(), "DEFAULT");
        assert_eq!((r.offset, r.limit), (None, None));
    }

    #[test]
    fn empty_sql_is_refused() {
        assert_eq!(
            QueryRequest::new("  \n".into(), None, None, None),
            Err(InvalidRequest::EmptySql)
        );
    }
}
