//! The sandbox for Spark SQL: an allow-list, not a deny-list.
//!
//! Spark SQL can read files by path (`parquet.`/p``, `read_files(...)`), load code (`ADD JAR`,
//! `CREATE FUNCTION`) and call into the JVM (`reflect`, `java_method`). None of that may run, so
//! a query is parsed here (sqlparser's AST, as the Polars engine does), checked, and what Spark
//! runs is the AST printed back, never the client's text:
//! - one read-only query ([`spool_sql::parse_query`]);
//! - every relation is a table or view of the project (optionally qualified with the project's
//!   name, as Kylin clients write `SSB.P_LINEORDER`) or a CTE of the query, and is printed as the
//!   catalog's name; table functions and every other kind of `FROM` item are refused;
//! - every function is on [`ALLOWED_FUNCTIONS`] (Spark's pure built-ins: aggregates, math,
//!   strings, dates, conditionals, window functions), called by a one-part name;
//! - no backslash anywhere in the printed text: Spark's lexer reads `\'` inside a string as an
//!   escaped quote where sqlparser (like Calcite) does not, so a backslash could make Spark see
//!   code where this check saw a string;
//! - no `${`: Spark substitutes variables into the text before parsing (the session also turns
//!   substitution off);
//! - no quote, backslash or control character inside a quoted name, no string literal that
//!   would not print back as itself ([`spool_sql::faithful::check_tokens`]), and the printed
//!   text reads back as the checked AST ([`spool_sql::faithful::print_verified`]).
//!
//! The session runs with `spark.sql.ansi.doubleQuotedIdentifiers`, so `"X"` is an identifier
//! on Spark as in Kylin's SQL, and the printed AST means to Spark what it meant here.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Statement, TableFactor, VisitMut, VisitorMut,
};

use spool_sql::Refusal;

use crate::catalog::Project;

/// Spark's built-in functions a query may call: pure functions of their arguments. Anything
/// that reads files, the JVM, the session or the environment is absent on purpose
/// (`reflect`, `java_method`, `try_reflect`, `read_files`, `input_file_name`, `current_user`,
/// `spark_partition_id`, `uuid`, `rand`...).
pub(crate) const ALLOWED_FUNCTIONS: &[&str] = &[
    // Aggregates.
    "any",
    "any_value",
    "approx_count_distinct",
    "approx_percentile",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "collect_list",
    "collect_set",
    "corr",
    "count",
    "count_if",
    "covar_pop",
    "covar_samp",
    "every",
    "first",
    "first_value",
    "grouping",
    "grouping_id",
    "kurtosis",
    "last",
    "last_value",
    "max",
    "max_by",
    "mean",
    "median",
    "min",
    "min_by",
    "mode",
    "percentile",
    "percentile_approx",
    "skewness",
    "some",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "sum",
    "try_avg",
    "try_sum",
    "var_pop",
    "var_samp",
    "variance",
    "listagg",
    "string_agg",
    // Window functions.
    "cume_dist",
    "dense_rank",
    "lag",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
    // Math.
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bround",
    "cbrt",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "cot",
    "degrees",
    "div",
    "e",
    "exp",
    "expm1",
    "factorial",
    "floor",
    "greatest",
    "least",
    "ln",
    "log",
    "log10",
    "log1p",
    "log2",
    "mod",
    "nanvl",
    "negative",
    "pi",
    "pmod",
    "positive",
    "pow",
    "power",
    "radians",
    "rint",
    "round",
    "sign",
    "signum",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "try_add",
    "try_divide",
    "try_multiply",
    "try_subtract",
    "width_bucket",
    // Strings.
    "ascii",
    "btrim",
    "char",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "contains",
    "endswith",
    "format_number",
    "format_string",
    "initcap",
    "instr",
    "lcase",
    "left",
    "len",
    "length",
    "levenshtein",
    "like",
    "ilike",
    "locate",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "overlay",
    "position",
    "printf",
    "regexp",
    "regexp_count",
    "regexp_extract",
    "regexp_extract_all",
    "regexp_instr",
    "regexp_like",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rlike",
    "rpad",
    "rtrim",
    "soundex",
    "space",
    "split",
    "split_part",
    "startswith",
    "substr",
    "substring",
    "substring_index",
    "translate",
    "trim",
    "ucase",
    "upper",
    // Dates and times.
    "add_months",
    "current_date",
    "current_timestamp",
    "date",
    "date_add",
    "date_diff",
    "date_format",
    "date_from_unix_date",
    "date_part",
    "date_sub",
    "date_trunc",
    "dateadd",
    "datediff",
    "datepart",
    "day",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "extract",
    "from_unixtime",
    "hour",
    "last_day",
    "make_date",
    "make_timestamp",
    "minute",
    "month",
    "months_between",
    "next_day",
    "now",
    "quarter",
    "second",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "to_date",
    "to_timestamp",
    "trunc",
    "unix_date",
    "unix_timestamp",
    "weekday",
    "weekofyear",
    "year",
    // Conditionals, casts and comparisons.
    "bigint",
    "boolean",
    "cast",
    "coalesce",
    "decimal",
    "double",
    "float",
    "if",
    "ifnull",
    "int",
    "isnan",
    "isnotnull",
    "isnull",
    "nullif",
    "nvl",
    "nvl2",
    "smallint",
    "string",
    "tinyint",
    "try_cast",
    "zeroifnull",
    "nullifzero",
    // Arrays and maps built from values (no generators).
    "array",
    "array_contains",
    "array_distinct",
    "array_join",
    "array_max",
    "array_min",
    "array_position",
    "array_size",
    "cardinality",
    "element_at",
    "size",
    "sort_array",
    // Hashes.
    "crc32",
    "hash",
    "md5",
    "sha",
    "sha1",
    "sha2",
    "xxhash64",
];

/// A checked query: the text to run, and the project relations it reads (catalog spelling).
#[derive(Debug)]
pub(crate) struct Checked {
    /// What Spark runs.
    pub sql: String,
    /// Tables and views of the project the query names, each once.
    pub relations: Vec<String>,
}

/// Checks `sql` against `project` and returns what Spark runs, paged by `offset` / `limit`
/// where the SQL has no paging of its own.
pub(crate) fn check(
    sql: &str,
    project: &Project,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<Checked, Refusal> {
    check_inner(sql, project, offset, limit, true)
}

/// Checks a view's SQL: the same rules, no paging, no renaming of its columns.
pub(crate) fn check_view(sql: &str, project: &Project) -> Result<Checked, Refusal> {
    check_inner(sql, project, None, None, false)
}

fn check_inner(
    sql: &str,
    project: &Project,
    offset: Option<u64>,
    limit: Option<u64>,
    top_level: bool,
) -> Result<Checked, Refusal> {
    let mut statement = spool_sql::parse_query(sql)?;
    let mut checker = Checker {
        project,
        ctes: HashSet::new(),
        relations: Vec::new(),
        error: None,
    };
    let _ = statement.visit(&mut checker);
    if let Some(error) = checker.error {
        return Err(error.into());
    }
    if let Statement::Query(query) = &mut statement {
        if top_level {
            spool_sql::name_computed_columns(query);
        }
        spool_sql::apply_paging(query, offset, limit);
    }
    // The user's names and literals print faithfully (parse_query checked); a name from the
    // project's files that does not is Spool's problem, not the user's.
    let text = spool_sql::faithful::print_verified(&statement)
        .map_err(|e| Refusal::Internal(format!("the SQL prepared for Spark is unfaithful: {e}")))?;
    if text.contains('\\') {
        return Err(Refusal::Query(
            "backslashes are not supported in SQL run on Spark (in strings or names)".to_owned(),
        ));
    }
    if text.contains("${") {
        return Err(Refusal::Query(
            "'${' is not supported in SQL run on Spark".to_owned(),
        ));
    }
    Ok(Checked {
        sql: text,
        relations: checker.relations,
    })
}

struct Checker<'a> {
    project: &'a Project,
    ctes: HashSet<String>,
    relations: Vec<String>,
    error: Option<String>,
}

impl Checker<'_> {
    fn fail(&mut self, message: String) -> ControlFlow<()> {
        self.error.get_or_insert(message);
        ControlFlow::Break(())
    }

    fn not_found(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let message = format!(
            "table '{relation}' not found in project '{}'",
            self.project.name
        );
        self.fail(message)
    }
}

impl VisitorMut for Checker<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.ctes.extend(spool_sql::cte_names(query));
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        match spool_sql::check_from_item(factor) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => self.fail(e),
        }
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        let (table, qualified) = match spool_sql::project_relation(relation, &self.project.name) {
            Ok((table, qualified)) => (table.clone(), qualified),
            Err(e) => return self.fail(e),
        };
        let key = table.value.to_lowercase();
        if !qualified && self.ctes.contains(&key) {
            return ControlFlow::Continue(());
        }
        let resolved = match self.project.relation(&table.value) {
            Some(name) if table.quote_style.is_none() || name == table.value => name.to_owned(),
            _ => return self.not_found(relation),
        };
        if !self.relations.contains(&resolved) {
            self.relations.push(resolved.clone());
        }
        *relation = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
            '`', resolved,
        ))]);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            let parts: Option<Vec<&Ident>> = function
                .name
                .0
                .iter()
                .map(ObjectNamePart::as_ident)
                .collect();
            let name = match parts.as_deref() {
                Some([one]) => one.value.to_lowercase(),
                _ => {
                    let message = format!(
                        "function {} is not allowed: call built-in functions by their plain name",
                        function.name
                    );
                    return self.fail(message);
                }
            };
            if !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
                return self.fail(format!("function {name} is not allowed on Spark"));
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::Source;

    fn project() -> Project {
        let mut p = Project {
            name: "ssb".to_owned(),
            ..Project::default()
        };
        for t in ["P_LINEORDER", "DATES"] {
            p.tables.insert(
                t.to_lowercase(),
                (
                    t.to_owned(),
                    Source::Parquet(PathBuf::from(format!("/d/{t}.parquet"))),
                ),
            );
        }
        p.views.insert(
            "v".to_owned(),
            ("V".to_owned(), "select 1 as one".to_owned()),
        );
        p
    }

    fn ok(sql: &str) -> Checked {
        check(sql, &project(), None, None).expect("accepted")
    }

    fn refused(sql: &str) -> String {
        check(sql, &project(), None, None)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn project_relations_are_printed_by_their_catalog_name() {
        let c = ok("select lo_revenue from ssb.p_lineorder join dates on lo_orderdate = d_datekey");
        assert_eq!(
            c.sql,
            "SELECT lo_revenue FROM `P_LINEORDER` JOIN `DATES` ON lo_orderdate = d_datekey"
        );
        assert_eq!(c.relations, ["P_LINEORDER", "DATES"]);
        let c = ok(r#"with x as (select * from "P_LINEORDER") select count(*) from x, v"#);
        assert_eq!(c.relations, ["P_LINEORDER", "V"]);
        assert!(
            c.sql
                .ends_with(r#"SELECT count(*) AS "EXPR$0" FROM x, `V`"#),
            "{}",
            c.sql
        );
    }

    #[test]
    fn paging_applies_like_on_polars() {
        let c = check("select * from dates", &project(), Some(2), Some(3)).expect("ok");
        assert_eq!(c.sql, "SELECT * FROM `DATES` LIMIT 3 OFFSET 2");
    }

    #[test]
    fn files_the_jvm_and_other_projects_are_out_of_reach() {
        for (sql, expected) in [
            (
                "select * from parquet.`/etc/passwd`",
                "not found: a query reads only the tables of project 'ssb'",
            ),
            (
                "select * from csv.`/etc/passwd`",
                "not found: a query reads only the tables of project 'ssb'",
            ),
            (
                "select * from other.dates",
                "not found: a query reads only the tables of project 'ssb'",
            ),
            (
                "select * from read_files('/etc')",
                "table functions are not allowed",
            ),
            ("select * from range(10)", "table functions are not allowed"),
            (
                "select reflect('java.lang.Runtime', 'getRuntime')",
                "function reflect is not allowed on Spark",
            ),
            (
                "select java_method('java.lang.System', 'exit', 1)",
                "function java_method is not allowed on Spark",
            ),
            (
                "select input_file_name() from dates",
                "function input_file_name is not allowed on Spark",
            ),
            (
                "select upper(x) from (select sys.reflect('a') as x)",
                "call built-in functions by their plain name",
            ),
            (
                "select * from \"dates\"",
                "table '\"dates\"' not found in project 'ssb'",
            ),
            (
                "select * from nope",
                "table 'nope' not found in project 'ssb'",
            ),
            ("select 'a\\' , 1", "backslashes are not supported"),
            ("select '${spark.driver.host}'", "'${' is not supported"),
        ] {
            let e = refused(sql);
            assert!(e.contains(expected), "{sql}: {e}");
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
    fn kylins_functions_run_as_spark_spells_them() {
        let c = ok("select year(d_date), sum(lo_revenue) from p_lineorder group by year(d_date)");
        assert_eq!(
            c.sql,
            r#"SELECT year(d_date) AS "EXPR$0", sum(lo_revenue) AS "EXPR$1" FROM `P_LINEORDER` GROUP BY year(d_date)"#
        );
    }
}
