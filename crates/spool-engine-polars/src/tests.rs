//! The engine against real project folders in a temp dir.

use std::fs;
use std::path::Path;

use futures::StreamExt;
use polars::prelude::*;
use spool_domain::{QueryId, QueryRequest};
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
    let engine = PolarsEngine::new(root);
    let store = MemoryResultStore::default();
    let id = QueryId::new_random();
    let request = QueryRequest::new(sql.into(), Some(project), offset, limit).expect("request");
    let sink = store.create(id).await.expect("sink");
    let execution = engine.execute(&request, sink, CancelToken::new()).await?;
    let rows = execution.rows;
    execution.sink.commit().expect("commit");
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
        ("drop table orders", "DROP TABLE statements are not allowed"),
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
    let sink = store.create(QueryId::new_random()).await.expect("sink");
    let err = engine
        .execute(&request, sink, cancel)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, EngineError::Cancelled), "{err:?}");
}
