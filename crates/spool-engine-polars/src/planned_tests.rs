//! Queries through Spool's planner lowered to the LazyFrame API (`FrontEnd::Spool`), against a
//! real project folder; each expected answer is worked out by hand from the fixture, with
//! Kylin's semantics (Spark's decimal scales, NULL handling, integer division).

use std::fs;

use futures::StreamExt;
use polars::prelude::*;
use spool_domain::{QueryId, QueryRequest, ResultKey};
use spool_ports::testing::MemoryResultStore;
use spool_ports::{CancelToken, EngineError, QueryEngine, ResultStore};

use crate::{FrontEnd, PolarsEngine};

/// Project `kylin` with SALES (a decimal price with a NULL, a region with a NULL) and REGIONS.
fn fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("kylin");
    fs::create_dir_all(&dir).expect("mkdir");
    let price = Series::new(
        "PRICE".into(),
        [Some("10.00"), Some("20.50"), Some("14.99"), None],
    )
    .cast(&DataType::Decimal(15, 2))
    .expect("decimals");
    let mut sales = DataFrame::new(
        4,
        vec![
            Column::new("ID".into(), [1i64, 2, 3, 4]),
            Column::new(
                "REGION".into(),
                [Some("ASIA"), Some("EUROPE"), Some("ASIA"), None],
            ),
            price.into_column(),
            Column::new("QTY".into(), [1i32, 2, 3, 4]),
            Column::new("NOTE".into(), [Some("a"), Some(""), None, Some("d")]),
        ],
    )
    .expect("frame");
    let file = fs::File::create(dir.join("SALES.parquet")).expect("create");
    ParquetWriter::new(file)
        .finish(&mut sales)
        .expect("parquet");
    fs::write(
        dir.join("REGIONS.csv"),
        "NAME,CODE\nASIA,1\nEUROPE,2\nAFRICA,3\n",
    )
    .expect("csv");
    fs::write(
        dir.join("ASIAN_SALES.sql"),
        "select id, price * 2 as double_price from sales where region = 'ASIA'",
    )
    .expect("view");
    root
}

/// The CSV answer and the result's column names.
async fn ask(root: &std::path::Path, sql: &str) -> Result<(String, Vec<String>), EngineError> {
    let engine = PolarsEngine::new(root).with_front_end(FrontEnd::Spool);
    let store = MemoryResultStore::default();
    let id = ResultKey::new(QueryId::new_random(), 1);
    let request = QueryRequest::new(sql.into(), Some("kylin"), None, None).expect("request");
    let sink = store.create(id).await.expect("sink");
    let execution = engine.execute(&request, sink, CancelToken::new()).await?;
    let names = execution.columns.iter().map(|c| c.name.clone()).collect();
    execution.sink.commit().await.expect("commit");
    let mut body = store.open(id).await.expect("open").expect("result").body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    Ok((String::from_utf8(bytes).expect("utf-8"), names))
}

async fn answer(root: &std::path::Path, sql: &str) -> String {
    ask(root, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .0
}

#[tokio::test]
async fn the_silently_wrong_answers_of_polars_sql_are_right() {
    let root = fixture();
    let root = root.path();
    for (sql, expected) in [
        // SUM of a literal counts rows (Tableau's "number of records").
        ("select sum(1), sum(3), count(*) from sales", "4,12,4\n"),
        // 45.49 / 10 at Spark's scale for DECIMAL(25,2) / BIGINT: 15 places.
        (
            "select sum(price) / sum(qty) from sales",
            "4.549000000000000\n",
        ),
        // AVG of a decimal is exact: 45.49 / 3 at scale 6, rounded half up.
        ("select avg(price) from sales", "15.163333\n"),
        // CONCAT with a NULL argument is NULL.
        (
            "select concat(region, '-x') from sales order by id",
            "ASIA-x\nEUROPE-x\nASIA-x\n\n",
        ),
        // A decimal compared with a string compares decimals: 20.50 only.
        ("select id from sales where price = '20.5'", "2\n"),
        // Sorting by a decimal with a LIMIT (a top-k that panicked in Polars); NULL is the
        // smallest value, so it comes last descending.
        ("select id from sales order by price desc limit 2", "2\n3\n"),
        ("select id from sales order by price limit 2", "4\n1\n"),
        // Integer division and remainder truncate towards zero; by zero is NULL.
        (
            "select 7 / 2, -7 / 2, 7 % -3, -7 % 3, 1 / 0 from sales limit 1",
            "3,-3,1,-1,\n",
        ),
        // COUNT(DISTINCT x) ignores NULL; SUM over no rows is NULL, COUNT 0.
        ("select count(distinct region) from sales", "2\n"),
        (
            "select sum(qty), count(qty) from sales where id > 100",
            ",0\n",
        ),
        // Groups with a NULL key, HAVING, ORDER BY an alias and a column (NULL first).
        (
            "select region, count(*) as n from sales group by region having count(*) > 0 \
             order by n desc, region",
            "ASIA,2\n,1\nEUROPE,1\n",
        ),
        // Names match ignoring case, quoted or not (Kylin's Calcite is case-insensitive).
        (r#"select "id" from "sales" where "Id" = 1"#, "1\n"),
        // Joins: inner and left, by an equality between the two sides.
        (
            "select s.id, r.code from sales s join regions r on s.region = r.name order by s.id",
            "1,1\n2,2\n3,1\n",
        ),
        (
            "select s.id, r.code from sales s left join regions r on r.name = s.region \
             order by s.id",
            "1,1\n2,2\n3,1\n4,\n",
        ),
        // Empty strings are not NULL.
        (
            "select id from sales where note = '' or note is null order by id",
            "2\n3\n",
        ),
        (
            "select id from sales where region in ('EUROPE', null) order by id",
            "2\n",
        ),
        (
            "select case when qty > 2 then 'big' else 'small' end from sales order by id",
            "small\nsmall\nbig\nbig\n",
        ),
        (
            "select upper(substring(region, 2, 3)), char_length(region) from sales \
             where id = 2",
            "URO,6\n",
        ),
        // No FROM: one row.
        ("select 1 + 1, 'a'", "2,a\n"),
        // A view of the project, read like a table.
        (
            "select v.id, double_price from asian_sales v order by id",
            "1,20.00\n3,29.98\n",
        ),
    ] {
        assert_eq!(answer(root, sql).await, expected, "{sql}");
    }
}

#[tokio::test]
async fn results_carry_kylins_labels_and_errors_say_where() {
    let root = fixture();
    let root = root.path();
    let (_, names) = ask(
        root,
        "select count(*) as cnt, id, sum(qty) from sales group by id",
    )
    .await
    .expect("ran");
    assert_eq!(names, ["CNT", "ID", "EXPR$2"]);
    let (_, names) = ask(root, r#"select id as "Id", id from sales"#)
        .await
        .expect("ran");
    assert_eq!(names, ["Id", "ID"]);
    match ask(root, "select nope\nfrom sales").await {
        Err(EngineError::InvalidQuery(m)) => {
            assert_eq!(m, "column 'nope' not found (line 1, column 8)");
        }
        other => panic!("{other:?}"),
    }
    match ask(root, "select * from read_csv('/etc/passwd')").await {
        Err(EngineError::InvalidQuery(m)) => {
            assert!(m.starts_with("table functions are not allowed"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}
