//! The OpenAPI document against the running server: Schemathesis (from PyPI, installed by
//! `cargo xtask ci`) fuzzes every documented operation and checks that no answer is a 5xx and
//! every answer's status, content type and body match the document.

use std::process::Command;

use crate::harness::Server;

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let schemathesis = std::env::var("SPOOL_TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!(
            "SPOOL_TEST_SCHEMATHESIS is not set: this test needs schemathesis (PyPI). `cargo \
             xtask ci` installs it and sets it; for a shell, `eval \"$(cargo xtask services \
             start)\"` does the same"
        )
    });
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    // A real query, so the operations on one query reach more than "not found".
    let id = server.submit("select lo_orderkey from lineorder limit 10", "ssb");
    server.wait(&id);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[parameters]\nid = \"{id}\"\nproject = \"ssb\"\n"),
    )
    .expect("config");
    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(server.url("/kylin/api/openapi.json"))
        .args(["--auth", "ADMIN:KYLIN"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "30", "--seed", "20261201", "--no-color"])
        .args(["--request-timeout", "30"])
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("running {schemathesis}: {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(report.contains("passed"), "{report}");
}
