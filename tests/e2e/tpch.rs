//! TPC-H at a small scale factor through the API on both engines, every answer checked against
//! DuckDB's: the data, the 22 queries and the answers are DuckDB's own (its `tpch` extension
//! from PyPI, run by `xtask/scripts/tpc.py` over the same Parquet files Spool reads), so nothing
//! here was written by Spool.
//!
//! A query is either answered as DuckDB answers it, or refused with a message that names what
//! Spool does not support yet (`SPOOL-QUERY-INVALID`): a wrong answer or an internal error
//! fails the suite, and so does a query of [`ANSWERED`] that is no longer answered.

use std::path::Path;
use std::process::Command;

use crate::harness::{Server, tests_dir};
use crate::spark::{cluster_turn, env};

/// The scale factor: 60,000 LINEITEM rows.
const SF: &str = "0.01";

/// The queries Spool answers today, on both engines.
const ANSWERED: &[&str] = &[
    "q01", "q02", "q03", "q04", "q05", "q06", "q07", "q08", "q09", "q10", "q11", "q12", "q13",
    "q14", "q15", "q16", "q17", "q18", "q19", "q20", "q21", "q22",
];

/// Generates the data set, the queries and DuckDB's answers into `out`.
pub(crate) fn generate(suite: &str, sf: &str, out: &Path) {
    let python = env("SPOOL_TEST_TPC_PYTHON");
    let script = tests_dir().join("../xtask/scripts/tpc.py");
    let status = Command::new(&python)
        .arg(&script)
        .args([suite, sf])
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(status.success(), "tpc.py {suite} {sf} failed: {status}");
}

/// One cell of a CSV line (RFC 4180 quoting).
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    out.push(cell);
    out
}

/// Whether two cells hold the same value: text as text, numbers as numbers. Where one side
/// has fewer decimals (Kylin's `AVG` of a decimal and decimal division have Spark's scale,
/// DuckDB's are doubles), the other rounds to it; otherwise within a relative 1e-9.
fn same_cell(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) else {
        return false;
    };
    let decimals = |s: &str| s.split_once('.').map(|(_, f)| f.len());
    let scale = match (decimals(a), decimals(b)) {
        (Some(p), Some(q)) => Some(p.min(q)),
        (one, other) => one.or(other),
    };
    let rounding = scale.map_or(0.0, |d| 0.5 * 10f64.powi(-(d as i32)) * (1.0 + 1e-9));
    (x - y).abs() <= rounding.max(1e-9 * x.abs().max(y.abs()).max(1.0))
}

/// Whether `got` has DuckDB's rows (in any order: ties under ORDER BY may come either way).
pub(crate) fn same_rows(got: &str, expected: &str) -> bool {
    let sorted = |csv: &str| {
        let mut rows: Vec<Vec<String>> = csv.lines().map(cells).collect();
        rows.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(p), Ok(q)) => p.total_cmp(&q),
                    _ => x.cmp(y),
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        rows
    };
    let (a, b) = (sorted(got), sorted(expected));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_cell(p, q)))
}

/// What Spool made of one query.
pub(crate) enum Outcome {
    Right,
    Refused(String),
    Wrong(String),
}

/// Runs `sql` on `project` and judges it against DuckDB's `expected` CSV.
pub(crate) fn judge(server: &Server, sql: &str, project: &str, expected: &str) -> Outcome {
    let id = server.submit(sql, project);
    let v = server.wait(&id);
    if v["data"]["status"] == "SUCCESSFUL" {
        let got = String::from_utf8(server.result(&id)).expect("utf-8");
        if same_rows(&got, expected) {
            Outcome::Right
        } else {
            let head: String = got.lines().take(3).collect::<Vec<_>>().join(" | ");
            let want: String = expected.lines().take(3).collect::<Vec<_>>().join(" | ");
            Outcome::Wrong(format!("got {head} ... expected {want} ..."))
        }
    } else if v["data"]["error_code"] == "SPOOL-QUERY-INVALID" {
        Outcome::Refused(v["data"]["info"].as_str().unwrap_or_default().to_owned())
    } else {
        Outcome::Wrong(format!("failed otherwise: {}", v["data"]))
    }
}

#[test]
fn tpch_is_answered_as_duckdb_answers_it_or_refused_on_both_engines() {
    let _turn = cluster_turn();
    let generated = tempfile::tempdir().expect("tempdir");
    generate("tpch", SF, generated.path());
    let remote = env("SPOOL_TEST_SPARK_REMOTE");
    let server = Server::start(&format!(
        "workers = 2\nsample_sf = 0\nspark_remote = \"{remote}\"\n"
    ));
    for project in ["tpch", "tpch_spark"] {
        let dir = server.data_dir.join("projects").join(project);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for entry in std::fs::read_dir(generated.path().join("data")).expect("data") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(
        server.data_dir.join("projects/tpch_spark/project.toml"),
        "engine = \"spark\"\n",
    )
    .expect("toml");

    let mut queries: Vec<_> = std::fs::read_dir(generated.path().join("queries"))
        .expect("queries")
        .map(|e| e.expect("entry").path())
        .collect();
    queries.sort();
    let mut failures = Vec::new();
    for (project, engine) in [("tpch", "Polars"), ("tpch_spark", "Spark")] {
        let (mut right, mut refused) = (Vec::new(), Vec::new());
        for path in &queries {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let sql = std::fs::read_to_string(path).expect("sql");
            let expected = std::fs::read_to_string(
                generated.path().join("answers").join(format!("{name}.csv")),
            )
            .expect("DuckDB answers every TPC-H query");
            match judge(&server, &sql, project, &expected) {
                Outcome::Right => right.push(name),
                Outcome::Refused(message) => {
                    if ANSWERED.contains(&name.as_str()) {
                        failures.push(format!("{engine} {name}: no longer answered: {message}"));
                    }
                    refused.push(format!("{name} ({message})"));
                }
                Outcome::Wrong(what) => failures.push(format!("{engine} {name}: WRONG: {what}")),
            }
        }
        eprintln!(
            "TPC-H SF {SF} on {engine}: {} of {} right ({}); refused: {}",
            right.len(),
            queries.len(),
            right.join(" "),
            refused.join("; ")
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
