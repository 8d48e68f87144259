//! The Spark engine against a real cluster (started by `cargo xtask ci`, which sets
//! `SPOOL_TEST_SPARK_REMOTE`; its Connect server ends a reattachable stream after 3 s).

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polars::prelude::*;
use spool_domain::{OutputFormat, OutputSpec, QueryRequest};
use spool_engine_spark::SparkEngine;
use spool_ports::{CancelToken, EngineError, QueryEngine, ResultSink, ResultStoreError};

fn remote() -> String {
    std::env::var("SPOOL_TEST_SPARK_REMOTE").unwrap_or_else(|_| {
        panic!(
            "SPOOL_TEST_SPARK_REMOTE is not set: these tests need a Spark Connect server. \
             `cargo xtask ci` starts one; for a shell, `eval \"$(cargo xtask services start)\"`"
        )
    })
}

/// A sink that keeps the bytes and waits `delay` in every write: a slow consumer.
struct SlowSink {
    bytes: Arc<Mutex<Vec<u8>>>,
    delay: Duration,
}

impl Write for SlowSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        std::thread::sleep(self.delay);
        self.bytes.lock().expect("lock").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ResultSink for SlowSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        Ok(self.bytes.lock().expect("lock").len() as u64)
    }
    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        Ok(())
    }
}

/// A project `p` with a table `T` of `rows` rows (`id`, `name`).
fn project(rows: i64) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("p")).expect("mkdir");
    let ids: Vec<i64> = (0..rows).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
    let mut frame = df!("id" => ids, "name" => names).expect("frame");
    let file = std::fs::File::create(root.path().join("p/T.parquet")).expect("create");
    ParquetWriter::new(file)
        .with_row_group_size(Some(20_000))
        .finish(&mut frame)
        .expect("parquet");
    root
}

fn request(sql: &str) -> QueryRequest {
    let mut r = QueryRequest::new(sql.to_owned(), Some("p"), None, None).expect("request");
    r.output = OutputSpec {
        format: OutputFormat::Csv,
        ..OutputSpec::default()
    };
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_streamed_longer_than_the_servers_stream_limit_is_complete() {
    let rows = 400_000;
    let root = project(rows);
    let engine = SparkEngine::new(root.path(), &remote()).expect("engine");
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = Box::new(SlowSink {
        bytes: Arc::clone(&bytes),
        delay: Duration::from_millis(150),
    });
    let before = spool_engine_spark::reattaches();
    let started = Instant::now();
    let execution = engine
        .execute(
            &request("select id, name from t order by id"),
            sink,
            CancelToken::new(),
        )
        .await
        .expect("the query runs");
    let took = started.elapsed();
    assert_eq!(execution.rows, rows as u64);
    execution.sink.commit().await.expect("commit");
    let text = String::from_utf8(bytes.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), rows as usize, "every row, once");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{i},row-{i}"), "row {i} in order");
    }
    let reattaches = spool_engine_spark::reattaches() - before;
    assert!(
        took > Duration::from_secs(4) && reattaches > 0,
        "the stream outlived the server's 3 s limit ({took:?}) and was resumed ({reattaches} times)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem() {
    let root = project(10);
    let engine = SparkEngine::new(root.path(), &remote()).expect("engine");
    let sink = || {
        Box::new(SlowSink {
            bytes: Arc::default(),
            delay: Duration::ZERO,
        }) as Box<dyn ResultSink>
    };
    let e = engine
        .execute(&request("select nope from t"), sink(), CancelToken::new())
        .await
        .expect_err("a missing column");
    assert!(
        matches!(&e, EngineError::InvalidQuery(m) if m.contains("nope")),
        "{e:?}"
    );
    let e = engine
        .execute(&request("select * from other"), sink(), CancelToken::new())
        .await
        .expect_err("a missing table");
    assert!(
        matches!(&e, EngineError::InvalidQuery(m) if m.contains("table 'other' not found in project 'p'")),
        "{e:?}"
    );
    // An empty result still has its columns.
    let execution = engine
        .execute(
            &request("select id, name from t where id < 0"),
            sink(),
            CancelToken::new(),
        )
        .await
        .expect("an empty result");
    assert_eq!(execution.rows, 0);
    let names: Vec<&str> = execution.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spark_engine_keeps_the_engine_contract() {
    let root = project(3_000);
    let engine = SparkEngine::new(root.path(), &remote()).expect("engine");
    let script = spool_ports::testing::EngineScript {
        project: spool_domain::ProjectName::parse("p").expect("name"),
        answer: (
            "select id, name from t where id <= 1 order by id desc".to_owned(),
            "1,row-1\n0,row-0\n".to_owned(),
        ),
        invalid: "select nope from t".to_owned(),
        // Nine million rows, streamed batch by batch.
        long: "select a.id, b.name from t a cross join t b".to_owned(),
        missing: spool_domain::ProjectName::parse("nowhere").expect("name"),
    };
    spool_ports::testing::check_query_engine(&engine, &script).await;
}
