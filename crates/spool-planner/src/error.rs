//! Why a query has no plan: the user's SQL (with where in it), or Spool's own fault.

use std::fmt;

/// Where in the SQL text something is: 1-based line and column (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The line, from 1.
    pub line: u64,
    /// The column, from 1.
    pub column: u64,
}

impl From<sqlparser::tokenizer::Span> for Position {
    fn from(span: sqlparser::tokenizer::Span) -> Self {
        Self {
            line: span.start.line,
            column: span.start.column,
        }
    }
}

/// Why [`crate::plan_query`] returned no plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The SQL is invalid, unsupported or names what does not exist: the message is for the
    /// user, and says where (`at` is unknown for errors that belong to the whole statement).
    User {
        /// What is wrong, for the user.
        message: String,
        /// Where.
        at: Position,
    },
    /// A planner bug: `pass` names the step that failed. Never the user's SQL's fault; the
    /// same query fails again the same way, so it is not worth retrying.
    Internal {
        /// The planner's step that failed.
        pass: &'static str,
        /// What went wrong, for the log.
        message: String,
    },
}

impl PlanError {
    /// A user error at `at`.
    pub fn user(message: impl Into<String>, at: impl Into<Position>) -> Self {
        Self::User {
            message: message.into(),
            at: at.into(),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { message, at } if at.line > 0 => {
                write!(f, "{message} (line {}, column {})", at.line, at.column)
            }
            Self::User { message, .. } => f.write_str(message),
            Self::Internal { pass, message } => {
                write!(f, "internal planner error in {pass}: {message}")
            }
        }
    }
}

impl std::error::Error for PlanError {}
