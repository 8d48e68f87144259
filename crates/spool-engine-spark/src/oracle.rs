//! Spark's own answer to a query, for tests that check Spool's answers against Spark SQL (the
//! `oracle` feature; the server never enables it).
//!
//! The SQL runs as written, in a Spark session of its own (Kylin's: no ANSI mode; ANSI mode
//! where the SQL double-quotes names, which Spark reads as identifiers only there), over tables registered by path: no sandbox, no planner, no rewriting, so
//! the answer is Spark's alone. It is encoded as CSV by the same
//! writer Spool's results go through, so the two compare as text.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use spool_domain::{QueryId, ResultKey};
use spool_ports::testing::MemoryResultStore;
use spool_ports::{CancelToken, ResultStore};

use crate::client::{Client, Event, Remote};
use crate::{encode, pb, register_view};

/// The oracle's session: Spark SQL as Kylin runs it (Kylin 5 runs Spark 3 without ANSI mode:
/// a division by zero is NULL, a string that is no number casts to NULL).
const ORACLE_CONFIG: &[(&str, &str)] = &[
    ("spark.sql.ansi.enabled", "false"),
    ("spark.sql.session.timeZone", "UTC"),
    ("spark.sql.variable.substitute", "false"),
];

/// The session for SQL that double-quotes names, as Kylin's users write them: Spark reads
/// `"X"` as an identifier only in ANSI mode.
const QUOTED_CONFIG: &[(&str, &str)] = &[
    ("spark.sql.ansi.enabled", "true"),
    ("spark.sql.ansi.doubleQuotedIdentifiers", "true"),
    ("spark.sql.session.timeZone", "UTC"),
    ("spark.sql.variable.substitute", "false"),
];

/// Spark's answer to `sql`, as CSV (no header; RFC 4180 quoting; NULL as an empty field), over
/// `tables`: (name, Parquet file or folder). A name `SCHEMA.TABLE` is a table of database
/// `SCHEMA` (created, and the table replaced, in the cluster's catalog); any other name is a
/// temporary view of the oracle's session.
pub async fn answer(remote: &str, tables: &[(&str, &Path)], sql: &str) -> Result<String, String> {
    let client = Client::new(Remote::parse(remote)?)?;
    let session = client.session("oracle");
    let outcome = run(&client, &session, tables, sql).await;
    client.release_session(&session).await;
    outcome
}

async fn run(
    client: &Client,
    session: &crate::client::Session,
    tables: &[(&str, &Path)],
    sql: &str,
) -> Result<String, String> {
    client
        .set_config(
            session,
            if sql.contains('"') {
                QUOTED_CONFIG
            } else {
                ORACLE_CONFIG
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    for (name, path) in tables {
        if let Some((schema, table)) = name.split_once('.') {
            let location = path
                .to_string_lossy()
                .replace('\\', "\\\\")
                .replace('\'', "\\'");
            for statement in [
                format!("CREATE DATABASE IF NOT EXISTS `{schema}`"),
                format!("DROP TABLE IF EXISTS `{schema}`.`{table}`"),
                format!("CREATE TABLE `{schema}`.`{table}` USING parquet LOCATION '{location}'"),
            ] {
                run_sql(client, session, &statement).await?;
            }
            continue;
        }
        let source = spool_catalog::Source::Parquet(PathBuf::from(path));
        register_view(client, session, name, &source, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let batches = run_sql(client, session, sql).await?;

    let store = MemoryResultStore::default();
    let key = ResultKey::new(QueryId::new_random(), 1);
    let sink = store.create(key).await.map_err(|e| e.to_string())?;
    let (send, mut receive) = tokio::sync::mpsc::channel(batches.len().max(1));
    for batch in batches {
        send.send(batch).await.map_err(|e| e.to_string())?;
    }
    drop(send);
    let scratch = std::env::temp_dir();
    let execution = tokio::task::spawn_blocking(move || {
        encode(
            &mut receive,
            &spool_domain::OutputSpec::default(),
            sink,
            &scratch,
            &CancelToken::new(),
            Vec::new(),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    execution.sink.commit().await.map_err(|e| e.to_string())?;
    let mut body = store
        .open(key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the oracle's result is gone")?
        .body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Runs one SQL statement to completion: its Arrow batches.
async fn run_sql(
    client: &Client,
    session: &crate::client::Session,
    sql: &str,
) -> Result<Vec<bytes::Bytes>, String> {
    let plan = pb::Plan {
        op_type: Some(pb::plan::OpType::Root(pb::Relation {
            common: None,
            rel_type: Some(pb::relation::RelType::Sql(pb::Sql {
                query: sql.to_owned(),
                ..pb::Sql::default()
            })),
        })),
    };
    let mut execution = client
        .execute(session, plan, None)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    let mut batches = Vec::new();
    while let Some(event) = execution.next().await.map_err(|e| e.to_string())? {
        match event {
            Event::Batch(data) => batches.push(data),
            Event::Complete => break,
        }
    }
    execution.release().await;
    Ok(batches)
}
