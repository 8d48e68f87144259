//! The last gate before Polars runs SQL text: every `SQLContext::execute` of this crate goes
//! through [`execute`], or follows [`check`] on the same context.
//!
//! The text was printed from a checked AST and read back once already ([`crate::sql`]); here it
//! is read once more, exactly as Polars' SQL front end is about to read it, and must name only
//! tables registered in the context it runs on (or CTEs it defines itself), with no table
//! function in any FROM. A bug in any check or rewrite before this point therefore cannot make
//! Polars read a file by path or another project's table: the context holds one project's
//! tables only.

use std::collections::HashSet;

use polars::prelude::{LazyFrame, PolarsError, PolarsResult};
use polars::sql::SQLContext;
use tracing::error;

/// Runs `text` on `context` if the gate passes; a refusal is an internal error (the text came
/// from Spool, not from the user), logged with the text.
pub(crate) fn execute(context: &mut SQLContext, text: &str) -> PolarsResult<LazyFrame> {
    check(context, text).map_err(|e| PolarsError::ComputeError(e.into()))?;
    context.execute(text)
}

/// Refuses `text` unless every relation it reads is registered in `context` or is a CTE of it.
/// The message is for the log: the text is Spool's, so a refusal is Spool's fault.
pub(crate) fn check(context: &SQLContext, text: &str) -> Result<(), String> {
    let tables: HashSet<String> = context.get_tables().into_iter().collect();
    spool_sql::faithful::check_relations(text, &|name| tables.contains(name)).map_err(|e| {
        error!(sql = %text, reason = %e, "SQL stopped at the last gate before Polars");
        format!("{REFUSED}: the prepared SQL {e}")
    })
}

/// How a refusal's message starts.
const REFUSED: &str = "spool refused to run SQL at its last gate";

#[cfg(test)]
mod tests {
    use polars::prelude::{IntoLazy, df};

    use super::*;

    /// The sandbox checks SQL with this crate's sqlparser and Polars parses it with its own:
    /// they must be one and the same (a second version could read the same text otherwise).
    #[test]
    fn polars_parses_sql_with_the_sqlparser_the_checks_use() {
        let lock = include_str!("../../../Cargo.lock");
        let copies = lock.matches("\nname = \"sqlparser\"\n").count();
        assert_eq!(copies, 1, "Cargo.lock holds {copies} versions of sqlparser");
    }

    #[test]
    fn only_registered_tables_and_own_ctes_pass() {
        let mut context = SQLContext::new();
        let frame = df!("a" => [1i64, 2]).expect("frame").lazy();
        context.register("T", frame);
        let ran = |context: &mut SQLContext, sql: &str| {
            execute(context, sql)
                .and_then(|lf| lf.collect())
                .map(|df| df.height())
        };
        assert_eq!(ran(&mut context, r#"select * from "T""#).expect("ran"), 2);
        assert_eq!(
            ran(
                &mut context,
                r#"with x as (select a from "T") select * from x"#
            )
            .expect("ran"),
            2
        );
        for sql in [
            "select * from read_csv('/etc/passwd')",
            r#"select * from "T", read_parquet('/x.parquet')"#,
            "select * from other",
            // The attack's text as sqlparser printed it: the name ends after the backslash.
            r#"select 1 as "x\" , a from read_csv('/etc/passwd') --""#,
        ] {
            let e = ran(&mut context, sql).expect_err(sql).to_string();
            assert!(e.contains(REFUSED), "{sql}: {e}");
        }
    }
}
