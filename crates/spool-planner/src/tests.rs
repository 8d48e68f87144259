//! Binding and typing, through [`crate::plan_query`], over a catalog of two schemas.

use crate::catalog::{Catalog, Column, Table, View};
use crate::types::SqlType;
use crate::{Plan, PlanError, plan_query};

fn table(schema: &str, name: &str, columns: &[(&str, SqlType)]) -> Table {
    Table {
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns: columns.iter().map(|(n, t)| Column::new(n, *t)).collect(),
        rows: None,
    }
}

fn dec(precision: u8, scale: u8) -> SqlType {
    SqlType::decimal(precision, scale).expect("decimal")
}

/// SSB's tables (the default schema) and one of Kylin's test tables in `EDW`.
fn catalog() -> Catalog {
    use SqlType::*;
    let mut c = Catalog::new("SSB");
    c.add(table(
        "SSB",
        "LINEORDER",
        &[
            ("LO_ORDERKEY", BigInt),
            ("LO_CUSTKEY", Integer),
            ("LO_ORDERDATE", Integer),
            ("LO_QUANTITY", Integer),
            ("LO_EXTENDEDPRICE", dec(15, 2)),
            ("LO_REVENUE", BigInt),
        ],
    ));
    c.add(table(
        "SSB",
        "DATES",
        &[
            ("D_DATEKEY", Integer),
            ("D_YEAR", Integer),
            ("D_DATE", Date),
        ],
    ));
    c.add(table(
        "SSB",
        "CUSTOMER",
        &[
            ("C_CUSTKEY", Integer),
            ("C_REGION", Varchar),
            ("C_NATION", Varchar),
        ],
    ));
    c.add_view(View {
        schema: "SSB".to_owned(),
        name: "ASIA_CUSTOMERS".to_owned(),
        sql: "select c_custkey as id, c_nation from customer where c_region = 'ASIA'".to_owned(),
    });
    c.add_view(View {
        schema: "SSB".to_owned(),
        name: "LOOP".to_owned(),
        sql: "select * from loop".to_owned(),
    });
    c.add(table(
        "EDW",
        "TEST_CAL_DT",
        &[("CAL_DT", Date), ("WEEK_BEG_DT", Date), ("flag", Boolean)],
    ));
    c
}

fn plan(sql: &str) -> Plan {
    plan_query(sql, &catalog()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The output's (name, type) pairs.
fn output(sql: &str) -> Vec<(String, SqlType)> {
    plan(sql)
        .fields()
        .iter()
        .map(|f| (f.name.clone(), f.ty))
        .collect()
}

fn names(sql: &str) -> Vec<String> {
    output(sql).into_iter().map(|(n, _)| n).collect()
}

/// The user error for `sql`: its message, line and column.
fn fails(sql: &str) -> (String, u64, u64) {
    match plan_query(sql, &catalog()) {
        Err(PlanError::User { message, at }) => (message, at.line, at.column),
        other => panic!("{sql}: expected a user error, got {other:?}"),
    }
}

#[test]
fn labels_are_calcites_upper_case_names_and_expr_positions() {
    assert_eq!(names("select count(*) as cnt from lineorder"), ["CNT"]);
    assert_eq!(names(r#"select count(*) as "cnt" from lineorder"#), ["cnt"]);
    assert_eq!(
        names("select lo_revenue, sum(lo_quantity), 1 + 1 from lineorder group by lo_revenue"),
        ["LO_REVENUE", "EXPR$1", "EXPR$2"]
    );
    // A column keeps the catalog's spelling; a qualified one too.
    assert_eq!(
        names("select l.lo_revenue, d_year from lineorder l, dates"),
        ["LO_REVENUE", "D_YEAR"]
    );
    assert_eq!(names(r#"select "flag" from edw.test_cal_dt"#), ["flag"]);
    assert_eq!(names("select * from dates").len(), 3);
}

#[test]
fn schemas_qualify_tables_in_every_spelling() {
    for sql in [
        "select cal_dt from edw.test_cal_dt",
        r#"select cal_dt from "EDW"."TEST_CAL_DT""#,
        r#"select cal_dt from "EDW".test_cal_dt"#,
        "select edw.test_cal_dt.cal_dt from edw.test_cal_dt",
        "select test_cal_dt.cal_dt from edw.test_cal_dt",
        "select t.cal_dt from edw.test_cal_dt as t",
        "select cal_dt from ssb.dates, edw.test_cal_dt",
    ] {
        assert_eq!(output(sql), [("CAL_DT".to_owned(), SqlType::Date)], "{sql}");
    }
    // Unqualified names resolve in the default schema only.
    let (message, line, column) = fails("select cal_dt\nfrom test_cal_dt");
    assert_eq!(message, "table 'test_cal_dt' not found");
    assert_eq!((line, column), (2, 6));
    assert_eq!(
        fails("select * from nope.dates").0,
        "table 'nope.dates' not found"
    );
}

#[test]
fn names_are_resolved_in_their_scope_or_refused_with_their_position() {
    // D_YEAR is a column of both sides.
    let (message, line, column) = fails("select d_year from dates a, dates b");
    assert_eq!(
        message,
        "column 'd_year' is ambiguous; qualify it with its table"
    );
    assert_eq!((line, column), (1, 8));
    assert_eq!(
        output("select b.d_year from dates a, dates b"),
        [("D_YEAR".to_owned(), SqlType::Integer)]
    );
    // Once aliased, a table is known by its alias only.
    assert!(
        fails("select lineorder.lo_revenue from lineorder l")
            .0
            .contains("not found")
    );
    assert_eq!(
        fails("select lo_nope from lineorder").0,
        "column 'lo_nope' not found"
    );
    // A CTE and a derived table are relations of their own.
    assert_eq!(
        names("with x as (select d_year as y from dates) select x.y from x"),
        ["Y"]
    );
    assert_eq!(
        names("select s.total from (select sum(lo_revenue) total from lineorder) s"),
        ["TOTAL"]
    );
    assert_eq!(
        names("with x (a, b) as (select d_year, d_datekey from dates) select b from x"),
        ["B"]
    );
}

#[test]
fn only_the_catalogs_tables_bind() {
    assert!(
        fails("select * from read_csv('/etc/passwd')")
            .0
            .starts_with("table functions are not allowed")
    );
    assert!(fails("select * from a.b.c.d").0.contains("not found"));
    assert_eq!(
        plan_query("drop table dates", &catalog()),
        Err(PlanError::User {
            message: "only read-only queries (SELECT, WITH, VALUES) may run".to_owned(),
            at: crate::Position::default(),
        })
    );
}

#[test]
fn arithmetic_and_aggregates_have_kylins_types() {
    use SqlType::*;
    let ty = |sql: &str| output(sql)[0].1;
    // sum(price) / sum(qty): DECIMAL(25,2) / BIGINT; Spark keeps 15 decimal places.
    assert_eq!(
        ty("select sum(lo_extendedprice) / sum(lo_quantity) from lineorder"),
        dec(38, 15)
    );
    assert_eq!(
        ty("select avg(lo_extendedprice) from lineorder"),
        dec(19, 6)
    );
    assert_eq!(ty("select avg(lo_quantity) from lineorder"), Double);
    assert_eq!(ty("select sum(lo_quantity) from lineorder"), BigInt);
    assert_eq!(ty("select lo_quantity / 2 from lineorder"), Integer);
    assert_eq!(
        ty("select lo_extendedprice * 1.5 from lineorder"),
        dec(18, 3)
    );
    assert_eq!(ty("select 1.50"), dec(3, 2));
    assert_eq!(ty("select 3000000000"), BigInt);
    assert_eq!(ty("select 1e3"), Double);
    assert_eq!(ty("select date '1994-01-01'"), Date);
    assert_eq!(
        ty("select cast(lo_revenue as decimal(20, 4)) from lineorder"),
        dec(20, 4)
    );
    assert!(
        fails("select c_region + 1 from customer")
            .0
            .contains("cannot apply '+' to VARCHAR and INTEGER")
    );
    assert!(
        fails("select date '1994-02-30'")
            .0
            .contains("is not a valid DATE")
    );
}

#[test]
fn sum_of_a_literal_counts_rows_as_kylin_does() {
    let explained = plan("select sum(1), sum(3) from lineorder").explain();
    assert!(explained.contains("CountRows(*): BIGINT"), "{explained}");
    assert!(!explained.contains("Sum"), "{explained}");
    assert!(explained.contains("(Integer(3) * #0)"), "{explained}");
    // One count serves both.
    assert_eq!(explained.matches("CountRows").count(), 1, "{explained}");
}

#[test]
fn a_string_literal_compared_with_a_typed_column_is_converted_to_the_columns_type() {
    let explained = plan("select 1 from lineorder where lo_extendedprice = '5'").explain();
    assert!(
        explained.contains("(#4 = CAST('5' AS DECIMAL(15,2)))"),
        "{explained}"
    );
    let explained = plan("select 1 from dates where d_date >= '1994-01-01'").explain();
    assert!(
        explained.contains("CAST('1994-01-01' AS DATE)"),
        "{explained}"
    );
    let explained = plan(r#"select 1 from edw.test_cal_dt where "flag" = 'true'"#).explain();
    assert!(explained.contains("CAST('true' AS BOOLEAN)"), "{explained}");
}

#[test]
fn grouping_binds_select_items_over_groups_and_refuses_ungrouped_columns() {
    let (message, line, column) = fails("select lo_revenue, count(*) from lineorder");
    assert_eq!(message, "expression 'lo_revenue' is not being grouped");
    assert_eq!((line, column), (1, 8));
    // An expression of group keys is fine, and so is a group key by position.
    plan("select d_year + 1, count(*) from dates group by d_year");
    assert_eq!(
        names("select d_year, count(*) c from dates group by 1 having count(*) > 1"),
        ["D_YEAR", "C"]
    );
    assert!(
        fails("select sum(sum(lo_revenue)) from lineorder")
            .0
            .contains("aggregates cannot be nested")
    );
    assert!(
        fails("select * from lineorder where sum(lo_revenue) > 1")
            .0
            .contains("aggregate function SUM is not allowed here")
    );
}

#[test]
fn order_by_names_output_columns_positions_or_input_expressions() {
    let explained =
        plan("select d_year as y, count(*) as n from dates group by d_year order by n desc, 1")
            .explain();
    assert!(
        explained.starts_with("Sort #1 DESC NULLS LAST, #0 NULLS FIRST"),
        "{explained}"
    );
    // A column not selected is sorted by, then dropped.
    let p = plan("select d_year from dates order by d_datekey");
    assert_eq!(p.fields().len(), 1);
    assert!(p.explain().contains("AS $sort1"), "{}", p.explain());
    assert!(
        fails("select distinct d_year from dates order by d_datekey")
            .0
            .contains("must appear in the select list")
    );
    let explained = plan("select d_year from dates order by d_year limit 5 offset 2").explain();
    assert!(explained.starts_with("Limit 5 offset 2"), "{explained}");
}

#[test]
fn the_plan_of_an_ssb_query() {
    let sql = "select d_year, c_nation, sum(lo_revenue) as revenue \
               from lineorder join dates on lo_orderdate = d_datekey \
               join customer on lo_custkey = c_custkey \
               where c_region = 'ASIA' and d_year between 1992 and 1997 \
               group by d_year, c_nation order by d_year asc, revenue desc";
    let explained = plan(sql).explain();
    // LINEORDER's columns are #0-#5, DATES' #6-#8, CUSTOMER's #9-#11.
    let expected = "\
Sort #0 NULLS FIRST, #2 DESC NULLS LAST
  Project #0 AS D_YEAR, #1 AS C_NATION, #2 AS REVENUE
    Aggregate by [#7, #11] computing [Sum(#5): BIGINT]
      Filter ((#10 = 'ASIA') AND ((#7 >= Integer(1992)) AND (#7 <= Integer(1997))))
        Join Inner on (#1 = #9)
          Join Inner on (#2 = #6)
            Scan SSB.LINEORDER
            Scan SSB.DATES
          Scan SSB.CUSTOMER
";
    assert_eq!(explained, expected);
}

#[test]
fn views_bind_where_they_are_read() {
    assert_eq!(
        output("select a.id, c_nation from asia_customers a order by 1"),
        [
            ("ID".to_owned(), SqlType::Integer),
            ("C_NATION".to_owned(), SqlType::Varchar)
        ]
    );
    assert_eq!(
        names("select asia_customers.id from ssb.asia_customers"),
        ["ID"]
    );
    // A view sees no CTE of the query that reads it.
    plan("with customer as (select 1 as x) select id from asia_customers");
    let (message, line, column) = fails("select 1\nfrom loop");
    assert!(message.starts_with("view 'LOOP' is invalid"), "{message}");
    assert_eq!((line, column), (2, 6));
}
