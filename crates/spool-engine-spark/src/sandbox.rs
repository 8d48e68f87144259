//! The sandbox for Spark SQL is binding: Spark SQL can read files by path (`parquet.`/p``,
//! `read_files(...)`), load code (`ADD JAR`, `CREATE FUNCTION`) and call into the JVM
//! (`reflect`, `java_method`), and none of that can be said in a plan.
//!
//! A query is bound by Spool's planner against the project's catalog snapshot: one read-only
//! query, whose relations are the project's tables and views and whose functions are Spool's
//! registry; anything else does not bind. What Spark runs is the plan printed by [`lower`]
//! (temporary views Spool registered, positional columns, literals printed from their values),
//! never the client's text. The client's text is also held to
//! [`spool_planner::tokens::check_tokens`], as on Polars.

use spool_catalog::Snapshot;
use spool_planner::{Plan, PlanError};
use spool_ports::EngineError;

use crate::lower::{self, Printed};

/// `sql` bound against `snapshot`, paged by the request, and printed for Spark.
pub(crate) fn plan(
    sql: &str,
    snapshot: &Snapshot,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<(Plan, Printed), EngineError> {
    let plan = spool_planner::plan_query(sql, &snapshot.catalog)
        .map_err(|e| match e {
            PlanError::User { .. } => EngineError::InvalidQuery(e.to_string()),
            PlanError::Internal { .. } => EngineError::Internal(e.to_string()),
        })?
        .paged(offset, limit);
    let printed = lower::print(&plan).map_err(|lower::Unsupported(what)| {
        EngineError::InvalidQuery(format!("not supported on Spark yet: {what}"))
    })?;
    Ok((plan, printed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project `ssb` with two tables and a view, as the catalog reads it from disk.
    fn snapshot() -> (tempfile::TempDir, Snapshot) {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("ssb");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("P_LINEORDER.csv"),
            "LO_ORDERDATE,LO_REVENUE\n19940101,10\n",
        )
        .expect("w");
        std::fs::write(dir.join("DATES.csv"), "D_DATEKEY,D_YEAR\n19940101,1994\n").expect("w");
        std::fs::write(dir.join("V.sql"), "select 1 as one").expect("w");
        let snapshot = spool_catalog::open(root.path(), "ssb").expect("opens");
        (root, snapshot)
    }

    fn refused(sql: &str) -> String {
        let (_root, snapshot) = snapshot();
        plan(sql, &snapshot, None, None).expect_err(sql).to_string()
    }

    #[test]
    fn what_spark_runs_names_only_registered_views_and_the_plans_columns() {
        let (_root, snapshot) = snapshot();
        let (_, printed) = plan(
            "select d_year, sum(lo_revenue) from ssb.p_lineorder join dates \
             on lo_orderdate = d_datekey, v group by d_year",
            &snapshot,
            None,
            None,
        )
        .expect("plans");
        let views: Vec<&str> = printed.scans.iter().map(|(v, _, _)| v.as_str()).collect();
        assert_eq!(views, ["spool_t0", "spool_t1"]);
        assert!(
            !printed.sql.to_lowercase().contains("p_lineorder "),
            "{}",
            printed.sql
        );
        assert!(printed.sql.contains("`LO_REVENUE`"), "{}", printed.sql);
        let (_, paged) = plan("select * from dates", &snapshot, Some(2), Some(3)).expect("plans");
        assert!(paged.sql.ends_with("LIMIT 3 OFFSET 2"), "{}", paged.sql);
    }

    #[test]
    fn files_the_jvm_and_other_projects_are_out_of_reach() {
        for (sql, expected) in [
            ("select * from parquet.`/etc/passwd`", "not found"),
            ("select * from csv.`/etc/passwd`", "not found"),
            ("select * from other.dates", "not found"),
            ("select * from read_files('/etc')", "table functions"),
            ("select * from range(10)", "table functions"),
            (
                "select reflect('java.lang.Runtime', 'getRuntime')",
                "reflect",
            ),
            (
                "select java_method('java.lang.System', 'exit', 1)",
                "java_method",
            ),
            ("select input_file_name() from dates", "input_file_name"),
            (
                "select upper(x) from (select sys.reflect('a') as x)",
                "reflect",
            ),
            ("select * from nope", "not found"),
        ] {
            let e = refused(sql);
            assert!(e.to_lowercase().contains(expected), "{sql}: {e}");
        }
        for sql in [
            "add jar /tmp/x.jar",
            "create temporary function f as 'x.Y'",
            "load data local inpath '/etc/passwd' into table t",
            "insert overwrite directory '/tmp' select 1",
            "set spark.sql.variable.substitute=true",
        ] {
            let e = refused(sql);
            assert!(
                e.contains("only read-only queries") || e.starts_with("SQL syntax error"),
                "{sql}: {e}"
            );
        }
    }

    #[test]
    fn a_string_that_looks_like_code_stays_a_string() {
        let (_root, snapshot) = snapshot();
        // A backslash is a character in Kylin's strings; Spark is handed it escaped.
        let (_, printed) = plan("select 'a\\' , 1", &snapshot, None, None).expect("plans");
        assert!(printed.sql.contains("'a\\\\'"), "{}", printed.sql);
        for sql in [
            "select '${spark.driver.host}' from dates",
            "select 'x'' union select reflect(''a'')' from dates",
        ] {
            let (_, printed) = plan(sql, &snapshot, None, None).expect(sql);
            assert!(printed.sql.contains("FROM spool_t0"), "{}", printed.sql);
            // The only string literal is the value, with its quote escaped for Spark.
            assert_eq!(printed.sql.matches("spool_t").count(), 1, "{}", printed.sql);
        }
    }
}
