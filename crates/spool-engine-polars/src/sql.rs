//! Turns the SQL a client sent into SQL that Polars runs against one project, or refuses it.
//!
//! Works on the parsed AST, never on the text:
//! - exactly one statement, and it must be a query (`SELECT`, `WITH`, `VALUES`, set operations);
//! - every relation must be a table or view of the project (optionally qualified with the
//!   project's name, as Kylin clients write `SSB.P_LINEORDER`) or a CTE of the query; table
//!   functions such as `read_csv(...)` are refused, so SQL can never read a file by path;
//! - unquoted identifiers resolve case-insensitively to the catalog's spelling (Kylin users
//!   write `select * from p_lineorder` for `P_LINEORDER`); quoted ones stay exact;
//! - the request's `offset` / `limit` apply unless the SQL has its own OFFSET / LIMIT;
//! - the text handed on is printed from the checked AST and read back as Polars will read it
//!   ([`spool_sql::faithful::print_verified`]): text that means anything else is never run.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Statement, TableFactor, VisitMut, VisitorMut,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use spool_sql::Refusal;

use crate::{joins, rewrite};

/// The names a query may refer to, each keyed by its lowercase form.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    /// Tables and views of the project.
    pub tables: HashMap<String, String>,
    /// Columns of every table and view; a name spelled two ways is left out (ambiguous).
    pub columns: HashMap<String, Option<String>>,
    /// Each table's and view's columns, lowercase.
    pub table_columns: HashMap<String, HashSet<String>>,
    /// Estimated rows of tables and views, where known (for join planning).
    pub rows: HashMap<String, u64>,
    /// Views as (name, checked SQL), each after the views it reads. A query that reads a view
    /// gets them all as CTEs in front of its own, so Polars plans the view inline.
    pub views: Vec<(String, String)>,
}

impl Names {
    /// Adds a table or view and its columns.
    pub fn add_table<'a>(&mut self, table: &str, columns: impl IntoIterator<Item = &'a str>) {
        self.tables.insert(table.to_lowercase(), table.to_owned());
        let own = self.table_columns.entry(table.to_lowercase()).or_default();
        let columns: Vec<&str> = columns.into_iter().collect();
        own.extend(columns.iter().map(|c| c.to_lowercase()));
        for column in columns {
            self.columns
                .entry(column.to_lowercase())
                .and_modify(|known| {
                    if known.as_deref() != Some(column) {
                        *known = None;
                    }
                })
                .or_insert_with(|| Some(column.to_owned()));
        }
    }

    fn column(&self, name: &str) -> Option<&str> {
        self.columns.get(&name.to_lowercase())?.as_deref()
    }
}

/// Parses `sql`, checks it and returns the statement text to hand to Polars.
pub(crate) fn prepare(
    sql: &str,
    names: &Names,
    project: &str,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<String, Refusal> {
    prepare_inner(
        sql,
        names,
        project,
        offset,
        limit,
        true,
        &joins::NoEstimates,
    )
}

/// [`prepare`], with the joins of the outermost SELECT ordered by how many rows each
/// dimension's own filters keep, as `estimates` counts them.
pub(crate) fn prepare_estimated(
    sql: &str,
    names: &Names,
    project: &str,
    offset: Option<u64>,
    limit: Option<u64>,
    estimates: &dyn joins::Estimates,
) -> Result<String, Refusal> {
    prepare_inner(sql, names, project, offset, limit, true, estimates)
}

/// Checks a view's SQL like a query's, without putting other views in front of it.
pub(crate) fn prepare_view_body(
    sql: &str,
    names: &Names,
    project: &str,
) -> Result<String, Refusal> {
    prepare_inner(sql, names, project, None, None, false, &joins::NoEstimates)
}

fn prepare_inner(
    sql: &str,
    names: &Names,
    project: &str,
    offset: Option<u64>,
    limit: Option<u64>,
    with_views: bool,
    estimates: &dyn joins::Estimates,
) -> Result<String, Refusal> {
    let mut statement = spool_sql::parse_query(sql)?;
    let Statement::Query(query) = &mut statement else {
        unreachable!("parse_query returns queries only");
    };
    let mut resolver = Resolver {
        names,
        project,
        ctes: HashSet::new(),
        reads_view: false,
        error: None,
    };
    let _ = query.visit(&mut resolver);
    if let Some(error) = resolver.error {
        return Err(error.into());
    }
    let mut compat = rewrite::Compat::new(names);
    let _ = query.visit(&mut compat);
    if let Some(error) = compat.error {
        return Err(error.into());
    }
    let mut planner = JoinPlanner {
        names,
        ctes: joins::Ctes::new(),
        error: None,
        estimates: Some(estimates),
    };
    let _ = query.visit(&mut planner);
    if let Some(error) = planner.error {
        return Err(error.into());
    }
    if with_views && resolver.reads_view {
        prepend_views(query.as_mut(), &names.views)?;
    }
    if with_views {
        spool_sql::name_computed_columns(query);
    }
    spool_sql::apply_paging(query, offset, limit);
    // The user's own names and literals were checked to print faithfully (parse_query); what
    // is left to go wrong here is Spool's rewriting, or a name from the project's files.
    spool_sql::faithful::print_verified(&statement)
        .map_err(|e| Refusal::Internal(format!("the SQL prepared for Polars is unfaithful: {e}")))
}

/// Puts the project's views in front of the query's own CTEs.
fn prepend_views(query: &mut Query, views: &[(String, String)]) -> Result<(), String> {
    let definitions: Vec<String> = views
        .iter()
        .map(|(name, sql)| format!("{} AS ({sql})", quoted(name)))
        .collect();
    let text = format!("WITH {} SELECT 1", definitions.join(", "));
    let parsed = Parser::parse_sql(&GenericDialect {}, &text)
        .map_err(|e| format!("a view of this project is invalid: {e}"))?;
    let Some(Statement::Query(mut wrapper)) = parsed.into_iter().next() else {
        return Err("a view of this project is invalid".to_owned());
    };
    let Some(mut with) = wrapper.with.take() else {
        return Err("a view of this project is invalid".to_owned());
    };
    if let Some(own) = query.with.take() {
        with.recursive |= own.recursive;
        with.cte_tables.extend(own.cte_tables);
    }
    query.with = Some(with);
    Ok(())
}

struct Resolver<'a> {
    names: &'a Names,
    project: &'a str,
    ctes: HashSet<String>,
    reads_view: bool,
    error: Option<String>,
}

impl Resolver<'_> {
    fn fail(&mut self, message: String) -> ControlFlow<()> {
        self.error.get_or_insert(message);
        ControlFlow::Break(())
    }
}

fn quoted(value: &str) -> Ident {
    Ident::with_quote('"', value)
}

impl VisitorMut for Resolver<'_> {
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
        let table = match spool_sql::project_relation(relation, self.project) {
            Ok((table, _)) => table.clone(),
            Err(e) => return self.fail(e),
        };
        let key = table.value.to_lowercase();
        let resolved = if table.quote_style.is_some() {
            self.names
                .tables
                .values()
                .find(|t| **t == table.value)
                .cloned()
                .or_else(|| self.ctes.contains(&key).then(|| table.value.clone()))
        } else if self.ctes.contains(&key) {
            Some(table.value.clone())
        } else {
            self.names.tables.get(&key).cloned()
        };
        match resolved {
            Some(name) => {
                let is_cte = self.ctes.contains(&key) && !self.names.tables.contains_key(&key);
                if !is_cte && self.names.views.iter().any(|(v, _)| *v == name) {
                    self.reads_view = true;
                }
                *relation = if is_cte {
                    ObjectName(vec![ObjectNamePart::Identifier(table.clone())])
                } else {
                    ObjectName(vec![ObjectNamePart::Identifier(quoted(&name))])
                };
                ControlFlow::Continue(())
            }
            None => self.fail(format!(
                "table '{relation}' not found in project '{}'",
                self.project
            )),
        }
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                if let Some(column) = self.names.column(&ident.value) {
                    *ident = quoted(column);
                }
            }
            Expr::CompoundIdentifier(parts) => {
                let last = parts.len().saturating_sub(1);
                for (i, ident) in parts.iter_mut().enumerate() {
                    if ident.quote_style.is_some() {
                        continue;
                    }
                    let resolved = if i == last {
                        self.names.column(&ident.value).map(str::to_owned)
                    } else {
                        self.names.tables.get(&ident.value.to_lowercase()).cloned()
                    };
                    if let Some(name) = resolved {
                        *ident = quoted(&name);
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Runs [`joins::plan`] on every query and subquery.
struct JoinPlanner<'a> {
    names: &'a Names,
    ctes: joins::Ctes,
    error: Option<String>,
    /// For the next query visited only: the outermost one (views' bodies, CTEs and subqueries
    /// are planned without counting).
    estimates: Option<&'a dyn joins::Estimates>,
}

impl VisitorMut for JoinPlanner<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let estimates = self.estimates.take().unwrap_or(&joins::NoEstimates);
        match joins::plan(query, self.names, &mut self.ctes, estimates) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        n.add_table("LINEORDER", ["LO_ORDERKEY", "LO_REVENUE", "LO_ORDERDATE"]);
        n.add_table("DATES", ["D_DATEKEY", "D_YEAR"]);
        n.add_table("P_LINEORDER", ["LO_ORDERKEY", "LO_REVENUE", "V_REVENUE"]);
        n
    }

    fn check(sql: &str, expected: &str) {
        assert_eq!(
            prepare(sql, &names(), "ssb", None, None).as_deref(),
            Ok(expected),
            "{sql}"
        );
    }

    fn refused(sql: &str, expected_fragment: &str) {
        let err = prepare(sql, &names(), "ssb", None, None)
            .expect_err(sql)
            .to_string();
        assert!(err.contains(expected_fragment), "{sql}: {err}");
    }

    #[test]
    fn unquoted_names_resolve_to_the_catalog_spelling() {
        check(
            "select lo_revenue from p_lineorder",
            r#"SELECT "LO_REVENUE" FROM "P_LINEORDER""#,
        );
        check(
            "select l.lo_orderkey, d_year from lineorder l, dates where lo_orderdate = d_datekey",
            r#"SELECT l."LO_ORDERKEY", "D_YEAR" FROM "LINEORDER" l INNER JOIN "DATES" ON l."LO_ORDERDATE" = "DATES"."D_DATEKEY""#,
        );
        check(
            "select lineorder.lo_revenue from lineorder",
            r#"SELECT "LINEORDER"."LO_REVENUE" FROM "LINEORDER""#,
        );
        // Aliases and function names stay as written.
        check(
            "select sum(lo_revenue) as revenue from lineorder order by revenue",
            r#"SELECT sum("LO_REVENUE") AS revenue FROM "LINEORDER" ORDER BY revenue"#,
        );
    }

    #[test]
    fn quoted_names_stay_exact() {
        check(
            r#"select "LO_REVENUE" from "LINEORDER""#,
            r#"SELECT "LO_REVENUE" FROM "LINEORDER""#,
        );
        refused(
            r#"select * from "lineorder""#,
            "table '\"lineorder\"' not found in project 'ssb'",
        );
    }

    #[test]
    fn the_project_name_qualifies_tables() {
        check(
            "select * from SSB.P_LINEORDER",
            r#"SELECT * FROM "P_LINEORDER""#,
        );
        check(
            "select * from ssb.lineorder",
            r#"SELECT * FROM "LINEORDER""#,
        );
        refused(
            "select * from other.lineorder",
            "a query reads only the tables of project 'ssb'",
        );
        refused("select * from a.b.lineorder", "not found");
    }

    #[test]
    fn ctes_are_relations_too() {
        check(
            "with t as (select lo_revenue from lineorder) select * from t",
            r#"WITH t AS (SELECT "LO_REVENUE" FROM "LINEORDER") SELECT * FROM t"#,
        );
    }

    #[test]
    fn unknown_tables_are_named() {
        refused(
            "select * from nope",
            "table 'nope' not found in project 'ssb'",
        );
    }

    #[test]
    fn only_one_read_only_statement_runs() {
        refused(
            "drop table lineorder",
            "DROP TABLE statements are not allowed",
        );
        refused("delete from lineorder", "DELETE statements are not allowed");
        refused(
            "create table x as select 1",
            "CREATE TABLE statements are not allowed",
        );
        refused("select 1; select 2", "only one statement");
        refused("select (1", "SQL syntax error");
    }

    #[test]
    fn table_functions_cannot_read_files() {
        for sql in [
            "select * from read_csv('/etc/passwd')",
            "select * from READ_PARQUET('x.parquet')",
            "select * from \"read_csv\"('/etc/passwd')",
            "select * from lineorder, read_json('/etc/passwd')",
            "select * from lineorder where lo_orderkey in (select 1 from read_ipc('/x'))",
        ] {
            refused(sql, "table functions are not allowed");
        }
        refused("select * from '/etc/passwd'", "not found");
    }

    #[test]
    fn paging_applies_only_where_the_sql_has_none() {
        let p = |sql: &str, offset, limit| prepare(sql, &names(), "ssb", offset, limit).expect(sql);
        let p = |sql: &str, offset, limit| {
            p(&format!("select d_year from dates{sql}"), offset, limit)
                .replace(r#"SELECT "D_YEAR" FROM "DATES""#, "")
        };
        assert_eq!(p("", Some(5), Some(10)), " LIMIT 10 OFFSET 5");
        assert_eq!(p(" limit 3", Some(5), Some(10)), " LIMIT 3 OFFSET 5");
        assert_eq!(p(" offset 2", None, Some(10)), " LIMIT 10 OFFSET 2");
        assert_eq!(
            p(" limit 3 offset 2", Some(5), Some(10)),
            " LIMIT 3 OFFSET 2"
        );
        assert_eq!(p("", None, None), "");
    }

    #[test]
    fn computed_columns_get_kylin_names() {
        check(
            "select d_year, count(*), sum(d_year) as s from dates group by d_year order by count(*)",
            r#"SELECT "D_YEAR", count(*) AS "EXPR$1", sum("D_YEAR") AS s FROM "DATES" GROUP BY "D_YEAR" ORDER BY "EXPR$1""#,
        );
    }

    fn ssb_names() -> Names {
        let mut n = Names::default();
        for (table, rows, columns) in [
            (
                "LINEORDER",
                6_000_000,
                &["LO_CUSTKEY", "LO_SUPPKEY", "LO_ORDERDATE", "LO_REVENUE"][..],
            ),
            ("CUSTOMER", 30_000, &["C_CUSTKEY", "C_REGION"][..]),
            ("SUPPLIER", 2_000, &["S_SUPPKEY", "S_REGION"][..]),
            ("DATES", 2_556, &["D_DATEKEY", "D_YEAR"][..]),
        ] {
            n.add_table(table, columns.iter().copied());
            n.rows.insert(table.to_lowercase(), rows);
        }
        n
    }

    #[test]
    fn comma_joins_become_a_join_chain_from_the_fact_table() {
        let sql = "select d_year, sum(lo_revenue) as r from dates, customer, supplier, lineorder \
                   where lo_custkey = c_custkey and lo_suppkey = s_suppkey \
                   and lo_orderdate = d_datekey and c_region = 'ASIA' and (d_year = 1997 or d_year = 1998) \
                   group by d_year";
        let prepared = prepare(sql, &ssb_names(), "ssb", None, None).expect("prepared");
        assert_eq!(
            prepared,
            r#"SELECT "D_YEAR", sum("LO_REVENUE") AS r FROM "LINEORDER" INNER JOIN "DATES" ON "LINEORDER"."LO_ORDERDATE" = "DATES"."D_DATEKEY" INNER JOIN "CUSTOMER" ON "LINEORDER"."LO_CUSTKEY" = "CUSTOMER"."C_CUSTKEY" INNER JOIN "SUPPLIER" ON "LINEORDER"."LO_SUPPKEY" = "SUPPLIER"."S_SUPPKEY" WHERE "C_REGION" = 'ASIA' AND ("D_YEAR" = 1997 OR "D_YEAR" = 1998) GROUP BY "D_YEAR""#
        );
    }

    /// Counts as a test wants them: rows kept by relation name.
    struct Fixed(&'static [(&'static str, u64)]);

    impl joins::Estimates for Fixed {
        fn count(&self, relation: &str, filter: &str) -> Option<u64> {
            assert!(!filter.is_empty(), "{relation} counted without a filter");
            self.0
                .iter()
                .find(|(name, _)| relation == format!("\"{name}\""))
                .map(|&(_, n)| n)
        }
    }

    #[test]
    fn joins_start_with_the_dimension_whose_filters_keep_the_smallest_share() {
        let mut names = ssb_names();
        names.add_table("PART", ["P_PARTKEY", "P_CATEGORY"]);
        names.rows.insert("part".into(), 200_000);
        names
            .table_columns
            .get_mut("lineorder")
            .expect("lineorder")
            .insert("lo_partkey".into());
        let sql = "select sum(lo_revenue) from lineorder, dates, part, supplier \
                   where lo_orderdate = d_datekey and lo_partkey = p_partkey \
                   and lo_suppkey = s_suppkey and p_category = 'MFGR#12' and s_region = 'AMERICA'";
        let order = |prepared: &str| -> Vec<String> {
            prepared
                .split("INNER JOIN ")
                .skip(1)
                .map(|s| s.split(' ').next().unwrap_or("").to_owned())
                .collect()
        };
        let counted = |counts: &'static [(&'static str, u64)]| {
            order(
                &prepare_estimated(sql, &names, "ssb", None, None, &Fixed(counts))
                    .expect("prepared"),
            )
        };
        // Part keeps 4 % of its rows, supplier 20 %: part first, though it is the larger.
        assert_eq!(
            counted(&[("PART", 8_000), ("SUPPLIER", 400)]),
            [r#""PART""#, r#""SUPPLIER""#, r#""DATES""#]
        );
        // Counted the other way round, the other way round.
        assert_eq!(
            counted(&[("PART", 100_000), ("SUPPLIER", 100)]),
            [r#""SUPPLIER""#, r#""PART""#, r#""DATES""#]
        );
        // Without counts: the filtered ones first, the smaller of them first.
        let plain = prepare(sql, &names, "ssb", None, None).expect("prepared");
        assert_eq!(order(&plain), [r#""SUPPLIER""#, r#""PART""#, r#""DATES""#]);
        // Views and CTEs are planned without counting: only the outermost SELECT is counted.
        let nested = format!("with t as ({sql}) select * from t");
        struct Never;
        impl joins::Estimates for Never {
            fn count(&self, relation: &str, _: &str) -> Option<u64> {
                panic!("{relation} counted inside a CTE")
            }
        }
        let counted =
            prepare_estimated(&nested, &names, "ssb", None, None, &Never).expect("prepared");
        assert!(counted.contains("INNER JOIN"), "{counted}");
    }

    /// Key facts by dimension, as the engine would find them.
    struct Keyed(Vec<(&'static str, joins::KeyFacts)>);

    impl joins::Estimates for Keyed {
        fn count(&self, _: &str, _: &str) -> Option<u64> {
            None
        }

        fn keys(&self, relation: &str, key: &str, filter: &str) -> Option<joins::KeyFacts> {
            assert!(
                !filter.is_empty() && !key.is_empty(),
                "{relation}: {key} / {filter}"
            );
            self.0
                .iter()
                .find(|(name, _)| relation.starts_with(&format!("\"{name}\"")))
                .map(|(_, facts)| facts.clone())
        }

        fn filters_fact(&self) -> bool {
            true
        }
    }

    fn facts(
        kept: u64,
        range: Option<(i64, i64)>,
        full: (i64, i64),
        values: Option<&[i64]>,
    ) -> joins::KeyFacts {
        joins::KeyFacts {
            kept,
            rows: 30_000,
            range,
            full: Some(full),
            values: values.map(<[i64]>::to_vec),
        }
    }

    #[test]
    fn the_fact_table_is_filtered_by_the_keys_its_dimensions_keep() {
        let sql = "select c_region, d_year, sum(lo_revenue) as r from customer, lineorder l, dates \
                   where l.lo_custkey = c_custkey and lo_orderdate = d_datekey \
                   and c_region = 'ASIA' and d_year = 1997 group by c_region, d_year";
        let keyed = Keyed(vec![
            // Dates of 1997: a narrow range of the whole, 365 keys (more than the share listed).
            (
                "DATES",
                facts(365, Some((19970101, 19971231)), (19920101, 19981230), None),
            ),
            // Customers of ASIA: keys all over the range, few: listed.
            (
                "CUSTOMER",
                facts(3, Some((4, 29_000)), (1, 30_000), Some(&[4, 17, 29_000])),
            ),
        ]);
        let prepared =
            prepare_estimated(sql, &ssb_names(), "ssb", None, None, &keyed).expect("prepared");
        assert!(
            prepared.starts_with(
                "SELECT \"C_REGION\", \"D_YEAR\", sum(\"LO_REVENUE\") AS r FROM (SELECT * FROM \
                 \"LINEORDER\" WHERE \"LO_ORDERDATE\" BETWEEN 19970101 AND 19971231 AND \
                 \"LO_CUSTKEY\" IN (4, 17, 29000)) AS l INNER JOIN"
            ),
            "{prepared}"
        );
        // The joins and the dimensions' own filters are all still there.
        assert!(prepared.contains("\"C_REGION\" = 'ASIA'"), "{prepared}");
        assert!(prepared.contains("\"D_YEAR\" = 1997"), "{prepared}");
        assert_eq!(prepared.matches("INNER JOIN").count(), 2, "{prepared}");

        // A dimension that keeps no key: no fact row can join.
        let none = Keyed(vec![("CUSTOMER", facts(0, None, (1, 30_000), Some(&[])))]);
        let prepared =
            prepare_estimated(sql, &ssb_names(), "ssb", None, None, &none).expect("prepared");
        assert!(prepared.contains("WHERE 1 = 0) AS l"), "{prepared}");

        // Keys kept everywhere (a filter that keeps everything): the fact table as it was.
        let all = Keyed(vec![(
            "CUSTOMER",
            facts(30_000, Some((1, 30_000)), (1, 30_000), None),
        )]);
        let prepared =
            prepare_estimated(sql, &ssb_names(), "ssb", None, None, &all).expect("prepared");
        assert!(
            prepared.contains("FROM \"LINEORDER\" l INNER JOIN"),
            "{prepared}"
        );

        // A filter that need not keep the same rows twice is not turned into keys.
        let random = sql.replace("c_region = 'ASIA'", "random() < 0.5");
        let counted = prepare_estimated(&random, &ssb_names(), "ssb", None, None, &Fixed(&[]))
            .expect("prepared");
        assert!(!counted.contains("IN ("), "{counted}");
        let today = sql.replace("d_year = 1997", "d_year = extract(year from current_date)");
        let counted =
            prepare_estimated(&today, &ssb_names(), "ssb", None, None, &keyed).expect("prepared");
        assert!(!counted.contains("BETWEEN"), "{counted}");
    }

    /// [`Keyed`], with key lists tested as key sets: each keyed table's base, column and keys.
    struct WithSets(Keyed, std::cell::RefCell<Vec<(String, String, Vec<i64>)>>);

    impl joins::Estimates for WithSets {
        fn count(&self, relation: &str, filter: &str) -> Option<u64> {
            self.0.count(relation, filter)
        }

        fn keys(&self, relation: &str, key: &str, filter: &str) -> Option<joins::KeyFacts> {
            self.0.keys(relation, key, filter)
        }

        fn filters_fact(&self) -> bool {
            true
        }

        fn max_listed_keys(&self) -> usize {
            joins::MAX_KEY_SET
        }

        fn keyed_table(&self, table: &str, column: &str, keys: &[i64]) -> Option<String> {
            let mut made = self.1.borrow_mut();
            made.push((table.to_owned(), column.to_owned(), keys.to_vec()));
            Some(format!("keyed {}", made.len() - 1))
        }
    }

    #[test]
    fn a_chosen_key_list_is_read_from_a_keyed_table_where_the_engine_makes_one() {
        let sql = "select c_region, s_region, d_year, sum(lo_revenue) as r \
                   from customer, supplier, lineorder l, dates \
                   where l.lo_custkey = c_custkey and lo_suppkey = s_suppkey \
                   and lo_orderdate = d_datekey and c_region = 'ASIA' and s_region = 'ASIA' \
                   and d_year = 1997 group by c_region, s_region, d_year";
        let customers: Vec<i64> = (0..100).map(|k| 4 + k * 300).collect();
        let suppliers: Vec<i64> = (0..200).map(|k| 7 + k * 150).collect();
        let keyed = || {
            WithSets(
                Keyed(vec![
                    (
                        "DATES",
                        facts(365, Some((19970101, 19971231)), (19920101, 19981230), None),
                    ),
                    (
                        "CUSTOMER",
                        facts(100, Some((4, 29_704)), (1, 30_000), Some(&customers)),
                    ),
                    (
                        "SUPPLIER",
                        facts(200, Some((7, 29_857)), (1, 30_000), Some(&suppliers)),
                    ),
                ]),
                std::cell::RefCell::default(),
            )
        };
        let two = keyed();
        let prepared =
            prepare_estimated(sql, &ssb_names(), "ssb", None, None, &two).expect("prepared");
        // Both lists are chosen (only together do they empty row groups); the more selective
        // is keyed first, the second keyed table is made from the first; the range stays SQL.
        assert!(
            prepared.contains(
                "FROM (SELECT * FROM \"keyed 1\" WHERE \"LO_ORDERDATE\" BETWEEN 19970101 AND \
                 19971231) AS l INNER JOIN"
            ),
            "{prepared}"
        );
        assert_eq!(
            two.1.borrow().as_slice(),
            [
                (
                    "LINEORDER".to_owned(),
                    "LO_CUSTKEY".to_owned(),
                    customers.clone()
                ),
                (
                    "keyed 0".to_owned(),
                    "LO_SUPPKEY".to_owned(),
                    suppliers.clone()
                ),
            ]
        );
        assert!(!prepared.contains(" IN ("), "{prepared}");

        // A CTE named like the fact table is not the table: its keys stay an IN list.
        let shadowed = format!(
            "with lineorder as (select * from lineorder where lo_quantity < 10) {}",
            sql.replace("lineorder l", "lineorder")
                .replace("l.lo_custkey", "lo_custkey")
        );
        let cte = keyed();
        let prepared =
            prepare_estimated(&shadowed, &ssb_names(), "ssb", None, None, &cte).expect("prepared");
        assert!(cte.1.borrow().is_empty(), "{prepared}");
        assert!(prepared.contains(" IN ("), "{prepared}");
    }

    #[test]
    fn a_long_key_list_is_keyed_only_when_it_keeps_a_tenth_of_the_dimension_or_less() {
        let sql = "select c_nation, sum(lo_revenue) as r from customer, lineorder \
                   where lo_custkey = c_custkey and c_region = 'ASIA' group by c_nation";
        let keyed = |kept: u64| {
            let keys: Vec<i64> = (0..kept as i64).map(|k| 1 + k * 3).collect();
            let with = WithSets(
                Keyed(vec![(
                    "CUSTOMER",
                    joins::KeyFacts {
                        rows: 300_000,
                        ..facts(
                            kept,
                            Some((1, keys[keys.len() - 1])),
                            (1, 300_000),
                            Some(&keys),
                        )
                    },
                )]),
                std::cell::RefCell::default(),
            );
            prepare_estimated(sql, &ssb_names(), "ssb", None, None, &with).expect("prepared");
            with.1.borrow().len()
        };
        // 6 % of 300,000 customers (18,000 keys, more than an IN list takes): keyed.
        assert_eq!(keyed(18_000), 1);
        // 20 % (60,000 keys): left to the join.
        assert_eq!(keyed(60_000), 0);
        // A list an IN list could hold is taken as before.
        assert_eq!(keyed(4_000), 1);
    }

    #[test]
    fn a_second_key_list_is_written_only_where_the_lists_together_empty_row_groups() {
        let sql = "select c_region, s_region, sum(lo_revenue) as r from customer, supplier, \
                   lineorder where lo_custkey = c_custkey and lo_suppkey = s_suppkey \
                   and c_region = 'ASIA' and s_region = 'ASIA' group by c_region, s_region";
        let lists = |customers: &[i64], suppliers: &[i64]| {
            let keyed = Keyed(vec![
                (
                    "CUSTOMER",
                    facts(
                        customers.len() as u64,
                        Some((1, 29_999)),
                        (1, 30_000),
                        Some(customers),
                    ),
                ),
                (
                    "SUPPLIER",
                    joins::KeyFacts {
                        rows: 2_000,
                        ..facts(
                            suppliers.len() as u64,
                            Some((1, 1_999)),
                            (1, 2_000),
                            Some(suppliers),
                        )
                    },
                ),
            ]);
            let prepared =
                prepare_estimated(sql, &ssb_names(), "ssb", None, None, &keyed).expect("prepared");
            let start = prepared.find("WHERE").expect("a fact filter") + "WHERE ".len();
            let end = prepared.find(") AS \"LINEORDER\"").expect("a fact filter");
            prepared[start..end]
                .split(" AND ")
                .map(|c| c.split(' ').next().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        // 1 % of the customers, 20 % of the suppliers: about 400 rows a row group are left
        // after the customers' list; the suppliers' list would not empty row groups.
        let customers: Vec<i64> = (1..=300).map(|k| k * 99).collect();
        let suppliers: Vec<i64> = (1..=400).map(|k| k * 4).collect();
        assert_eq!(lists(&customers, &suppliers), [r#""LO_CUSTKEY""#]);
        // The other way round, the other list.
        let few_suppliers: Vec<i64> = vec![7, 1_500];
        assert_eq!(
            lists(&customers[..200].to_vec().repeat(3), &few_suppliers),
            [r#""LO_SUPPKEY""#]
        );
        // 3 customers of 30,000 and 2 suppliers of 2,000: together they leave about 0.02 rows
        // in a row group of 200,000; both are written, the more selective first.
        assert_eq!(
            lists(&[5, 9_000, 29_000], &few_suppliers),
            [r#""LO_CUSTKEY""#, r#""LO_SUPPKEY""#]
        );
    }

    #[test]
    fn unintended_cross_joins_of_large_tables_are_refused() {
        let names = ssb_names();
        let err = prepare(
            "select count(*) from lineorder, customer where c_region = 'ASIA'",
            &names,
            "ssb",
            None,
            None,
        )
        .expect_err("cross join")
        .to_string();
        assert!(err.contains("no join condition links CUSTOMER"), "{err}");
        // Small ones run as written.
        prepare(
            "select count(*) from dates, supplier",
            &names,
            "ssb",
            None,
            None,
        )
        .expect("small cross join");
        // An explicit CROSS JOIN is taken at its word.
        prepare(
            "select count(*) from lineorder cross join customer",
            &names,
            "ssb",
            None,
            None,
        )
        .expect("explicit");
    }

    /// No counts and no keys, but every dimension folded that planning offers: the folds made,
    /// each with the table it was made from, in order.
    #[derive(Default)]
    struct Folding(std::cell::RefCell<Vec<(String, joins::Fold)>>);

    impl joins::Estimates for Folding {
        fn count(&self, _: &str, _: &str) -> Option<u64> {
            None
        }

        fn folded_table(&self, table: &str, fold: &joins::Fold) -> Option<String> {
            let mut made = self.0.borrow_mut();
            made.push((table.to_owned(), fold.clone()));
            Some(format!("folded {}", made.len() - 1))
        }
    }

    fn folding_names() -> Names {
        let mut names = ssb_names();
        names.add_table("CUSTOMER", ["C_CUSTKEY", "C_REGION", "C_NATION"]);
        names
    }

    fn fold(
        relation: &str,
        key: &str,
        filter: Option<&str>,
        fact: &str,
        columns: &[&str],
    ) -> joins::Fold {
        joins::Fold {
            relation: relation.to_owned(),
            key: key.to_owned(),
            filter: filter.map(str::to_owned),
            fact_column: fact.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn dimensions_read_only_for_their_columns_are_folded_into_the_fact_table() {
        let sql = "select customer.c_nation, d_year, sum(lo_revenue) as r \
                   from customer, lineorder l, dates, supplier \
                   where l.lo_custkey = c_custkey and lo_orderdate = d_datekey \
                   and lo_suppkey = s_suppkey and c_region = 'ASIA' and s_region = 'ASIA' \
                   group by customer.c_nation, d_year order by d_year, r desc";
        let folding = Folding::default();
        let prepared = prepare_estimated(sql, &folding_names(), "ssb", None, None, &folding)
            .expect("prepared");
        // No join is left, and no dimension's filter: the folds apply them. The qualified
        // column now names the fact table's copy.
        assert_eq!(
            prepared,
            r#"SELECT l."C_NATION", "D_YEAR", sum("LO_REVENUE") AS r FROM (SELECT * FROM "folded 2") AS l GROUP BY l."C_NATION", "D_YEAR" ORDER BY "D_YEAR", r DESC"#
        );
        let folds = folding.0.into_inner();
        assert_eq!(
            folds,
            [
                (
                    "LINEORDER".to_owned(),
                    fold(
                        "\"CUSTOMER\"",
                        "C_CUSTKEY",
                        Some("\"C_REGION\" = 'ASIA'"),
                        "LO_CUSTKEY",
                        &["C_NATION"]
                    )
                ),
                (
                    "folded 0".to_owned(),
                    fold("\"DATES\"", "D_DATEKEY", None, "LO_ORDERDATE", &["D_YEAR"])
                ),
                (
                    "folded 1".to_owned(),
                    fold(
                        "\"SUPPLIER\"",
                        "S_SUPPKEY",
                        Some("\"S_REGION\" = 'ASIA'"),
                        "LO_SUPPKEY",
                        &[]
                    )
                ),
            ]
        );
    }

    #[test]
    fn a_dimension_stays_joined_where_a_fold_could_change_the_answer() {
        let planned = |sql: &str| {
            let folding = Folding::default();
            let prepared = prepare_estimated(sql, &folding_names(), "ssb", None, None, &folding)
                .expect("prepared");
            let folded: Vec<String> = folding
                .0
                .into_inner()
                .into_iter()
                .map(|(_, f)| f.relation)
                .collect();
            (prepared, folded)
        };
        let star = "from customer, lineorder, dates where lo_custkey = c_custkey \
                    and lo_orderdate = d_datekey and c_region = 'ASIA'";
        // `*` would read every column of the dimension.
        let (prepared, folded) = planned(&format!("select * {star}"));
        assert!(
            folded.is_empty() && prepared.matches("INNER JOIN").count() == 2,
            "{prepared}"
        );
        // A subquery might read a dimension's column from inside.
        let (_, folded) = planned(&format!(
            "select d_year {star} and lo_revenue > (select min(lo_revenue) from lineorder)"
        ));
        assert!(folded.is_empty(), "{folded:?}");
        // A qualified column in ORDER BY keeps its dimension joined; the other is folded.
        let (prepared, folded) = planned(&format!(
            "select customer.c_nation, d_year {star} order by customer.c_nation"
        ));
        assert_eq!(folded, ["\"DATES\""], "{prepared}");
        assert!(prepared.contains("INNER JOIN \"CUSTOMER\""), "{prepared}");
        // A dimension linked to another dimension, not only to the fact table, stays joined.
        let (prepared, folded) = planned(
            "select d_year from customer, lineorder, dates where lo_custkey = c_custkey \
             and lo_orderdate = d_datekey and c_custkey = d_year",
        );
        assert!(folded.is_empty(), "{prepared}");
        // A filter that need not keep the same rows twice is not folded.
        let (_, folded) = planned(
            "select d_year from lineorder, dates where lo_orderdate = d_datekey \
             and d_year = extract(year from current_date)",
        );
        assert!(folded.is_empty(), "{folded:?}");
        // A column of the same name in two tables: the fold would make the name ambiguous.
        let mut names = folding_names();
        names.add_table("DATES", ["D_DATEKEY", "D_YEAR", "LO_REVENUE"]);
        let folding = Folding::default();
        let prepared = prepare_estimated(
            "select dates.lo_revenue from lineorder, dates where lo_orderdate = d_datekey",
            &names,
            "ssb",
            None,
            None,
            &folding,
        )
        .expect("prepared");
        assert!(folding.0.into_inner().is_empty(), "{prepared}");
        // Without an engine that folds, the joins are as before.
        let plain = prepare(
            &format!("select d_year {star}"),
            &folding_names(),
            "ssb",
            None,
            None,
        )
        .expect("prepared");
        assert_eq!(plain.matches("INNER JOIN").count(), 2, "{plain}");
    }
}
