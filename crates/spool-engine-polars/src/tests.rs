//! The engine against real project folders in a temp dir.

use std::fs;
use std::path::Path;

use futures::StreamExt;
use polars::prelude::*;
use spool_domain::{QueryId, QueryRequest, ResultKey};
use spool_ports::testing::MemoryResultStore;
use spool_ports::{CancelToken, EngineError, QueryEngine, ResultStore};

use super::PolarsEngine;

/// A project `shop` with a Parquet table, a CSV table and a view.
fn fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("shop");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut orders = df!(
        "O_ID" => [1i64, 2, 3, 4],
        "O_CUSTOMER" => [10i32, 20, 10, 30],
        "O_AMOUNT" => [Some(5i64), Some(7), None, Some(11)],
        "O_NOTE" => ["plain", "has,comma", "has \"quote\"", "two\nlines"],
    )
    .expect("frame");
    let file = fs::File::create(dir.join("ORDERS.parquet")).expect("create");
    ParquetWriter::new(file)
        .finish(&mut orders)
        .expect("write parquet");
    fs::write(
        dir.join("CUSTOMERS.csv"),
        "C_ID,C_NAME\n10,Ann\n20,Bob\n30,Cy\n",
    )
    .expect("csv");
    // 2024-01-15, 2024-02-29 and 2025-12-31, as days since 1970-01-01.
    let days = Series::new("E_DAY".into(), [19_737i32, 19_782, 20_453])
        .cast(&DataType::Date)
        .expect("dates");
    let mut events = DataFrame::new(
        3,
        vec![Column::new("E_ID".into(), [1i64, 2, 3]), days.into_column()],
    )
    .expect("frame");
    let file = fs::File::create(dir.join("EVENTS.parquet")).expect("create");
    ParquetWriter::new(file)
        .finish(&mut events)
        .expect("write parquet");
    fs::write(
        dir.join("BIG_ORDERS.sql"),
        "select o_id, o_amount * 2 as O_DOUBLE from orders where o_amount > 6",
    )
    .expect("view");
    root
}

async fn run(
    root: &Path,
    project: &str,
    sql: &str,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<String, EngineError> {
    run_on(&PolarsEngine::new(root), project, sql, offset, limit).await
}

async fn run_on(
    engine: &PolarsEngine,
    project: &str,
    sql: &str,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<String, EngineError> {
    let store = MemoryResultStore::default();
    let id = ResultKey::new(QueryId::new_random(), 1);
    let request = QueryRequest::new(sql.into(), Some(project), offset, limit).expect("request");
    let sink = store.create(id).await.expect("sink");
    let execution = engine.execute(&request, sink, CancelToken::new()).await?;
    let rows = execution.rows;
    execution.sink.commit().await.expect("commit");
    let mut body = store.open(id).await.expect("open").expect("result").body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(
        text.lines().count() as u64 >= rows,
        "{rows} rows reported, fewer written"
    );
    Ok(text)
}

async fn ok(root: &Path, sql: &str) -> String {
    run(root, "shop", sql, None, None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn the_catalog_is_kept_until_a_file_of_the_project_changes() {
    let root = fixture();
    let dir = root.path().join("shop");
    let engine = PolarsEngine::new(root.path());
    let ask = |sql: &'static str| run_on(&engine, "shop", sql, None, None);
    assert_eq!(
        ask("select count(*) from customers").await.expect("count"),
        "3\n"
    );
    assert_eq!(
        ask("select count(*) from customers").await.expect("again"),
        "3\n"
    );
    // A table's file rewritten under the same name: the next query reads the new rows.
    fs::write(
        dir.join("CUSTOMERS.csv"),
        "C_ID,C_NAME\n10,Ann\n20,Bob\n30,Cy\n40,Di\n",
    )
    .expect("csv");
    assert_eq!(
        ask("select count(*) from customers")
            .await
            .expect("new rows"),
        "4\n"
    );
    // A view added: there at once.
    fs::write(
        dir.join("ANNS.sql"),
        "select c_id from customers where c_name = 'Ann'",
    )
    .expect("view");
    assert_eq!(
        ask("select count(*) from anns").await.expect("new view"),
        "1\n"
    );
    // A table removed: gone at once.
    fs::remove_file(dir.join("EVENTS.parquet")).expect("rm");
    let err = ask("select count(*) from events")
        .await
        .expect_err("removed table");
    assert!(matches!(err, EngineError::InvalidQuery(_)), "{err:?}");
    // The project removed: not found.
    fs::remove_dir_all(&dir).expect("rm project");
    let err = ask("select 1").await.expect_err("removed project");
    assert!(matches!(err, EngineError::ProjectNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn writes_rfc4180_csv_without_header_and_nulls_as_empty_fields() {
    let root = fixture();
    let csv = ok(root.path(), "select * from orders order by o_id").await;
    assert_eq!(
        csv,
        "1,10,5,plain\n2,20,7,\"has,comma\"\n3,10,,\"has \"\"quote\"\"\"\n4,30,11,\"two\nlines\"\n"
    );
}

#[tokio::test]
async fn names_resolve_case_insensitively_and_tables_join() {
    let root = fixture();
    let csv = ok(
        root.path(),
        "select c_name, sum(o_amount) as total from Orders, customers where o_customer = c_id group by c_name order by c_name",
    )
    .await;
    assert_eq!(csv, "Ann,5\nBob,7\nCy,11\n");
    let project_in_other_case = run(
        root.path(),
        "SHOP",
        "select count(*) from ORDERS",
        None,
        None,
    )
    .await;
    assert_eq!(project_in_other_case.expect("runs"), "4\n");
}

#[tokio::test]
async fn views_are_tables_defined_in_sql() {
    let root = fixture();
    assert_eq!(
        ok(root.path(), "select o_double from big_orders order by 1").await,
        "14\n22\n"
    );
}

#[tokio::test]
async fn request_paging_applies_unless_the_sql_has_its_own() {
    let root = fixture();
    let sql = "select o_id from orders order by o_id";
    assert_eq!(
        run(root.path(), "shop", sql, Some(1), Some(2))
            .await
            .expect("runs"),
        "2\n3\n"
    );
    let own = "select o_id from orders order by o_id limit 1";
    assert_eq!(
        run(root.path(), "shop", own, None, Some(3))
            .await
            .expect("runs"),
        "1\n"
    );
}

#[tokio::test]
async fn an_unknown_project_fails_as_kylin_says() {
    let root = fixture();
    let err = run(root.path(), "XXX", "select 1", None, None)
        .await
        .expect_err("no project");
    assert_eq!(err.to_string(), "Project 'XXX' does not exist;");
}

#[tokio::test]
async fn bad_sql_fails_with_a_readable_reason() {
    let root = fixture();
    for (sql, fragment) in [
        ("select nope from orders", "nope"),
        (
            "select * from nowhere",
            "table 'nowhere' not found in project 'shop'",
        ),
        ("selec 1", "SQL syntax error"),
        (
            "select * from read_parquet('/etc/passwd')",
            "table functions are not allowed",
        ),
        ("drop table orders", "only read-only queries"),
    ] {
        let err = run(root.path(), "shop", sql, None, None)
            .await
            .expect_err(sql);
        assert!(
            matches!(err, EngineError::InvalidQuery(_)),
            "{sql}: {err:?}"
        );
        assert!(err.to_string().contains(fragment), "{sql}: {err}");
    }
}

#[tokio::test]
async fn a_cancelled_query_reports_cancelled() {
    let root = fixture();
    let engine = PolarsEngine::new(root.path());
    let store = MemoryResultStore::default();
    let request = QueryRequest::new("select * from orders".into(), Some("shop"), None, None)
        .expect("request");
    let cancel = CancelToken::new();
    cancel.cancel(spool_ports::CancelReason::Stopped);
    let sink = store
        .create(ResultKey::new(QueryId::new_random(), 1))
        .await
        .expect("sink");
    let err = engine
        .execute(&request, sink, cancel)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, EngineError::Cancelled), "{err:?}");
}

/// Splits CSV without quoted fields (all SSB answers) into rows of values.
fn rows_of(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

/// A generated SSB project, shared by the SSB tests of this module.
fn ssb_fixture(sf: f64) -> (tempfile::TempDir, spool_ssb::Ssb) {
    let root = tempfile::tempdir().expect("tempdir");
    let ssb = spool_ssb::Ssb::new(sf).expect("scale");
    crate::sample::write_ssb_project(&root.path().join("ssb"), &ssb, 2).expect("generate");
    (root, ssb)
}

#[tokio::test]
async fn the_13_ssb_queries_give_the_answers_computed_without_polars() {
    let (root, ssb) = ssb_fixture(0.02);
    for ((name, sql), (answer_name, answer)) in spool_ssb::answers::QUERIES
        .iter()
        .zip(spool_ssb::answers::answers(&ssb))
    {
        assert_eq!(*name, answer_name);
        let csv = run(root.path(), "ssb", sql, None, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = spool_ssb::answers::check(&answer, &rows_of(&csv)) {
            panic!("{name}: {e}");
        }
    }
}

/// The same through Spool's planner lowered to the LazyFrame API (no Polars SQL, no rewrites
/// of SQL text): the comma joins become inner joins on the WHERE's equalities.
#[tokio::test]
async fn the_13_ssb_queries_through_spools_planner_give_the_same_answers() {
    let (root, ssb) = ssb_fixture(0.02);
    let answers = spool_ssb::answers::answers(&ssb);
    // Each lever on and off: the same (right) rows every time.
    let all = crate::PlannerOptions::default();
    let levers = [
        all,
        crate::PlannerOptions::none(),
        crate::PlannerOptions {
            key_filters: false,
            ..all
        },
        crate::PlannerOptions {
            join_order: false,
            ..all
        },
        crate::PlannerOptions {
            folds: false,
            ..all
        },
    ];
    for options in levers {
        let engine = PolarsEngine::new(root.path()).with_planner_options(options);
        for ((name, sql), (_, answer)) in spool_ssb::answers::QUERIES.iter().zip(&answers) {
            let csv = run_on(&engine, "ssb", sql, None, None)
                .await
                .unwrap_or_else(|e| panic!("{name} {options:?}: {e}"));
            if let Err(e) = spool_ssb::answers::check(answer, &rows_of(&csv)) {
                panic!("{name} {options:?}: {e}");
            }
        }
    }
}

/// The levers engage on SSB: Q2.1's fact table is filtered by the part keys its category
/// keeps (a key set), the most selective dimension joins first, and every dimension is
/// joined by lookup.
#[tokio::test]
async fn the_planners_levers_filter_ssbs_fact_table_by_the_kept_keys() {
    let (root, _) = ssb_fixture(0.02);
    let path = root.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let opened = crate::catalog::open(&path, "ssb").expect("open");
        let statistics = crate::stats::ProjectStatistics { project: &opened };
        let sql = spool_ssb::answers::QUERIES[3].1;
        let plan = |options| {
            spool_planner::plan_query_with(sql, opened.planner(), options, &statistics)
                .expect("plan")
                .explain()
        };
        let on = plan(crate::PlannerOptions::default());
        assert!(on.contains("IN KEYS"), "{on}");
        assert!(
            on.find("Scan SSB.PART") < on.find("Scan SSB.DATES"),
            "the part category keeps the fewest rows: {on}"
        );
        // Dates, part and supplier are much smaller than the fact table: joined by lookup.
        assert_eq!(on.matches("by lookup").count(), 3, "{on}");
        let off = plan(crate::PlannerOptions::none());
        assert!(!off.contains("IN KEYS"), "{off}");
        assert!(!off.contains("by lookup"), "{off}");
    })
    .await
    .expect("ran");
}

#[tokio::test]
async fn sql_compatibility_table() {
    let root = fixture();
    let cases: &[(&str, Result<&str, &str>)] = &[
        // Joins.
        (
            "select o_id, c_name from orders join customers on o_customer = c_id and o_amount > 6 order by o_id",
            Ok("2,Bob\n4,Cy\n"),
        ),
        (
            "select o_id, c_name from orders inner join customers on o_customer = c_id where c_name <> 'Ann' order by o_id",
            Ok("2,Bob\n4,Cy\n"),
        ),
        (
            "select c_name, o_id from customers left join orders on c_id = o_customer and o_amount > 6 order by c_name",
            Ok("Ann,\nBob,2\nCy,4\n"),
        ),
        (
            "select o_id, c_name from orders o, customers c where o.o_customer = c.c_id and c.c_name in ('Ann', 'Cy') order by o_id",
            Ok("1,Ann\n3,Ann\n4,Cy\n"),
        ),
        // Clauses and expressions.
        (
            "with t as (select o_customer, sum(o_amount) as s from orders group by o_customer) select c_name, s from t join customers on o_customer = c_id order by c_name",
            Ok("Ann,5\nBob,7\nCy,11\n"),
        ),
        (
            "select o_id from orders where o_id < 2 union all select c_id from customers where c_id = 10 order by 1",
            Ok("1\n10\n"),
        ),
        (
            "select o_id, case when o_amount > 6 then 'big' else 'small' end as size from orders order by o_id",
            Ok("1,small\n2,big\n3,small\n4,big\n"),
        ),
        ("select count(distinct o_customer) from orders", Ok("3\n")),
        (
            "select o_customer, sum(o_amount) from orders group by o_customer order by sum(o_amount) desc",
            Ok("30,11\n20,7\n10,5\n"),
        ),
        (
            "select o_customer, count(*) as n from orders group by o_customer having count(*) > 1",
            Ok("10,2\n"),
        ),
        (
            "select o_id from orders where o_amount between 6 and 11 order by o_id desc",
            Ok("4\n2\n"),
        ),
        (
            "select o_id from orders where o_customer in (select c_id from customers where c_name = 'Ann') order by o_id",
            Ok("1\n3\n"),
        ),
        (
            // The average of 5, 7 and 11 (NULL is not counted) is 7.67.
            "select o_id from orders where o_amount > (select avg(o_amount) from orders)",
            Ok("4\n"),
        ),
        // Dates and strings.
        (
            "select year(e_day), month(e_day), day(e_day) from events order by e_id limit 1",
            Ok("2024,1,15\n"),
        ),
        (
            "select extract(year from e_day) as y, count(*) from events group by y order by y",
            Ok("2024,2\n2025,1\n"),
        ),
        (
            "select date_trunc('month', e_day) from events order by e_id",
            Ok("2024-01-01 00:00:00\n2024-02-01 00:00:00\n2025-12-01 00:00:00\n"),
        ),
        (
            "select date_trunc('year', e_day) from events where e_id = 3",
            Ok("2025-01-01 00:00:00\n"),
        ),
        (
            "select e_id from events where e_day >= date '2024-02-01' order by e_id",
            Ok("2\n3\n"),
        ),
        (
            "select upper(c_name), lower(c_name), length(c_name), substr(c_name, 1, 2) from customers where c_id = 10",
            Ok("ANN,ann,3,An\n"),
        ),
        (
            "select concat(c_name, '!') from customers where c_id = 20",
            Ok("Bob!\n"),
        ),
        (
            "select c_name || '-' || c_id from customers where c_id = 30",
            Ok("Cy-30\n"),
        ),
        (
            "select coalesce(o_amount, 0) from orders where o_id = 3",
            Ok("0\n"),
        ),
        (
            "select cast(o_id as varchar) from orders where o_id = 1",
            Ok("1\n"),
        ),
        // Windows.
        (
            "select o_id, rank() over (order by o_amount desc) as r from orders where o_amount is not null order by o_id",
            Ok("1,3\n2,2\n4,1\n"),
        ),
        (
            "select o_id, row_number() over (partition by o_customer order by o_id) as n from orders order by o_id",
            Ok("1,1\n2,1\n3,2\n4,1\n"),
        ),
        (
            "select o_id, sum(o_amount) over (partition by o_customer) as s from orders order by o_id",
            Ok("1,5\n2,7\n3,5\n4,11\n"),
        ),
        // Not supported: refused with a message naming the construct.
        (
            "select date_trunc('fortnight', e_day) from events",
            Err("DATE_TRUNC does not know the unit 'FORTNIGHT'"),
        ),
    ];
    let mut failures = Vec::new();
    for (sql, expected) in cases {
        let got = run(root.path(), "shop", sql, None, None).await;
        let ok = match (expected, &got) {
            (Ok(rows), Ok(csv)) => csv == rows,
            (Err(fragment), Err(e)) => e.to_string().contains(fragment),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{sql}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn result_columns_carry_kylin_type_names() {
    let root = fixture();
    let engine = PolarsEngine::new(root.path());
    let store = MemoryResultStore::default();
    let sql = "select o_id, o_note as \"note, with comma\", count(*), avg(o_amount), e_day \
               from orders, events where o_id = e_id group by o_id, o_note, e_day";
    let request = QueryRequest::new(sql.into(), Some("shop"), None, None).expect("request");
    let sink = store
        .create(ResultKey::new(QueryId::new_random(), 1))
        .await
        .expect("sink");
    let execution = engine
        .execute(&request, sink, CancelToken::new())
        .await
        .expect("runs");
    let columns: Vec<(String, String)> = execution
        .columns
        .into_iter()
        .map(|c| (c.name, c.sql_type))
        .collect();
    let expected = [
        ("O_ID", "BIGINT"),
        ("note, with comma", "VARCHAR"),
        ("EXPR$2", "BIGINT"),
        ("EXPR$3", "DOUBLE"),
        ("E_DAY", "DATE"),
    ];
    assert_eq!(
        columns,
        expected
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn every_format_reports_the_rows_it_wrote() {
    use spool_domain::{OutputFormat, OutputSpec};
    let (root, _) = ssb_fixture(0.01);
    let engine = PolarsEngine::new(root.path());
    let store = MemoryResultStore::default();
    // More rows than one batch and one Parquet row group.
    let sql = "select lo_orderkey, lo_linenumber from lineorder";
    let csv = run(root.path(), "ssb", sql, None, None)
        .await
        .expect("csv runs");
    let written = csv.lines().count() as u64;
    assert!(written > 50_000, "more than one batch: {written}");
    for format in [
        OutputFormat::Csv,
        OutputFormat::Json,
        OutputFormat::Parquet,
        OutputFormat::Xlsx,
    ] {
        let request = QueryRequest::new(sql.into(), Some("ssb"), None, None)
            .expect("request")
            .with_output(OutputSpec {
                format,
                ..OutputSpec::default()
            });
        let sink = store
            .create(ResultKey::new(QueryId::new_random(), 1))
            .await
            .expect("sink");
        let execution = engine
            .execute(&request, sink, CancelToken::new())
            .await
            .expect("runs");
        assert_eq!(execution.rows, written, "{format:?}");
    }
}

/// A project `scan` whose `BIG` table has 250,000 rows in row groups of 50,000, a table `PARTS`
/// that is a folder of three files, and a view over `BIG`.
fn scan_fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("scan");
    fs::create_dir_all(dir.join("PARTS")).expect("mkdir");
    let ids: Vec<i64> = (0..250_000).collect();
    let tags: Vec<String> = ids.iter().map(|i| format!("t{}", i % 13)).collect();
    let mut big = df!("ID" => &ids, "VAL" => ids.iter().map(|i| (i * 7919) % 1000).collect::<Vec<_>>(), "TAG" => &tags)
        .expect("frame");
    ParquetWriter::new(fs::File::create(dir.join("BIG.parquet")).expect("create"))
        .with_row_group_size(Some(50_000))
        .finish(&mut big)
        .expect("write parquet");
    for part in 0..3i64 {
        let mut frame = big.slice(part * 80_000, 80_000);
        let file = fs::File::create(dir.join(format!("PARTS/p{part}.parquet"))).expect("create");
        ParquetWriter::new(file)
            .finish(&mut frame)
            .expect("write parquet");
    }
    fs::write(
        dir.join("BIG_VIEW.sql"),
        "select id, val + 1 as v, tag from big where id > 5",
    )
    .expect("view");
    root
}

/// The table and the number of runs of row groups `sql` would read on the row-group reader, or
/// `None` if it runs on the streaming engine.
async fn chunked_plan(root: &Path, project: &str, sql: &str) -> Option<(String, usize)> {
    let (root, project, sql) = (root.to_owned(), project.to_owned(), sql.to_owned());
    // Polars reads Parquet footers through its own runtime: off the test's reactor.
    tokio::task::spawn_blocking(move || {
        let opened = crate::catalog::open(&root, &project).expect("open");
        let plan = spool_planner::plan_query(&sql, opened.planner()).expect("plan");
        crate::chunked::row_local_plan(&plan)
            .and_then(|table| crate::chunked_runs(&opened.sources, table))
            .map(|(t, r)| (t, r.len()))
    })
    .await
    .expect("plan")
}

#[tokio::test]
async fn row_local_queries_read_runs_of_row_groups_and_give_the_streaming_engines_rows() {
    let root = scan_fixture();
    let cases = [
        ("select * from big", "SCAN.BIG", 3),
        (
            "select id, val * 2 as v2, upper(tag) from big where val % 3 = 0 and tag like 't1%'",
            "SCAN.BIG",
            3,
        ),
        ("select * from big_view where v < 500", "SCAN.BIG", 3),
        (
            "select id, tag from parts where id % 7 = 1",
            "SCAN.PARTS",
            3,
        ),
    ];
    for (sql, table, runs) in cases {
        let plan = chunked_plan(root.path(), "scan", sql).await;
        assert_eq!(plan, Some((table.to_owned(), runs)), "{sql}");

        let chunked = run(root.path(), "scan", sql, None, None).await.expect(sql);
        // A LIMIT makes the query not row-local: it runs on the streaming engine.
        let limited = format!("{sql} limit 100000000");
        let streamed = run(root.path(), "scan", &limited, None, None)
            .await
            .expect(sql);
        assert!(chunked.lines().count() > 1_000, "{sql}");
        assert_eq!(chunked, streamed, "{sql}");
    }
}

#[tokio::test]
async fn a_huge_row_group_goes_to_the_streaming_engine_and_mixed_file_types_fail_either_way() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("odd");
    fs::create_dir_all(dir.join("MIXED")).expect("mkdir");
    let rows = super::chunked::MAX_RUN_ROWS as i64 + 1;
    let mut huge = df!("N" => (0..rows).collect::<Vec<_>>()).expect("frame");
    ParquetWriter::new(fs::File::create(dir.join("HUGE.parquet")).expect("create"))
        .with_row_group_size(Some(rows as usize))
        .finish(&mut huge)
        .expect("write");
    let mut wide = df!("N" => [1i64, 2], "S" => ["a", "b"]).expect("frame");
    let mut narrow = df!("N" => [3i32, 4], "S" => ["c", "d"]).expect("frame");
    ParquetWriter::new(fs::File::create(dir.join("MIXED/a.parquet")).expect("create"))
        .finish(&mut wide)
        .expect("write");
    ParquetWriter::new(fs::File::create(dir.join("MIXED/b.parquet")).expect("create"))
        .finish(&mut narrow)
        .expect("write");
    assert_eq!(
        chunked_plan(root.path(), "odd", "select * from huge").await,
        None,
        "one row group over the limit: streaming engine"
    );
    let huge = run(
        root.path(),
        "odd",
        "select * from huge where n % 1000000 = 7",
        None,
        None,
    )
    .await
    .expect("runs");
    assert_eq!(huge, "7\n1000007\n");
    let mixed = run(root.path(), "odd", "select * from mixed", None, None).await;
    let streamed = run(
        root.path(),
        "odd",
        "select * from mixed limit 10",
        None,
        None,
    )
    .await;
    assert_eq!(
        chunked_plan(root.path(), "odd", "select * from mixed").await,
        Some(("ODD.MIXED".to_owned(), 2))
    );
    // Files that disagree on a column's type fail on either path, with the column named.
    for outcome in [mixed, streamed] {
        match outcome {
            Err(spool_ports::EngineError::InvalidQuery(m)) => {
                assert!(m.contains("data type mismatch for column N"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// One engine (one kept catalog) across queries: what a query names does not change the
/// tables later queries read. Polars registers a derived table's alias in its context, and
/// the row-group reader registers each run as the table; clones of a context share those.
#[tokio::test]
async fn a_query_never_changes_the_tables_the_next_query_reads() {
    let root = scan_fixture();
    let engine = PolarsEngine::new(root.path());
    let count = |sql: &'static str| {
        let engine = engine.clone();
        async move {
            run_on(&engine, "scan", sql, None, None)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    };
    assert_eq!(count("select count(*) from big").await.trim(), "250000");
    // Read on the row-group reader, one run of row groups at a time.
    assert!(
        chunked_plan(root.path(), "scan", "select * from big")
            .await
            .is_some()
    );
    let all = count("select * from big").await;
    assert_eq!(all.lines().count(), 250_000);
    assert_eq!(count("select count(*) from big").await.trim(), "250000");
    // A derived table named like the table.
    let aliased = count("select count(*) from (select * from big where id < 10) as big").await;
    assert_eq!(aliased.trim(), "10");
    assert_eq!(count("select count(*) from big").await.trim(), "250000");
    assert_eq!(count("select count(*) from BIG").await.trim(), "250000");
}

/// A project `contract` with a table `T` of `rows` rows (`ID`, `NAME`), and the engine
/// contract's script over it.
pub(crate) fn contract_project(root: &Path, rows: u32) -> spool_ports::testing::EngineScript {
    let dir = root.join("contract");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut csv = String::from("ID,NAME\n");
    for id in 1..=rows {
        csv.push_str(&format!("{id},n{id}\n"));
    }
    fs::write(dir.join("T.csv"), csv).expect("csv");
    spool_ports::testing::EngineScript {
        project: spool_domain::ProjectName::parse("contract").expect("name"),
        answer: (
            "select id, name from t where id <= 2 order by id desc".to_owned(),
            "2,n2\n1,n1\n".to_owned(),
        ),
        invalid: "select nope from t".to_owned(),
        // Millions of rows, written batch by batch.
        long: "select a.id, b.name from t a cross join t b".to_owned(),
        missing: spool_domain::ProjectName::parse("nowhere").expect("name"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_polars_engine_keeps_the_engine_contract() {
    let root = tempfile::tempdir().expect("tempdir");
    let script = contract_project(root.path(), 3_000);
    spool_ports::testing::check_query_engine(&PolarsEngine::new(root.path()), &script).await;
}
