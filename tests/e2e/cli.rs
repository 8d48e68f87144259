//! `spool`, the command line client, against the real server: every subcommand, resuming and
//! checking downloads, credentials from flags, environment and profiles, and the exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::harness::{ADMIN, Server, server_binary};

/// The `spool` binary `cargo test --workspace` built beside the server.
fn cli_binary() -> PathBuf {
    let path = server_binary().with_file_name(format!("spool{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`",
        path.display()
    );
    path
}

/// Runs `spool ARGS` against `server` as ADMIN (credentials in the environment).
fn spool(server: &Server, args: &[&str]) -> Output {
    Command::new(cli_binary())
        .args(args)
        .env("SPOOL_URL", &server.base)
        .env("SPOOL_USER", "ADMIN")
        .env("SPOOL_PASSWORD", "KYLIN")
        .env_remove("SPOOL_PROFILE")
        .env("SPOOL_PROFILES", "/nonexistent/spool-profiles.toml")
        .output()
        .expect("running spool")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SQL: &str = "select lo_orderkey, lo_linenumber, lo_shipmode from lineorder \
                   order by lo_orderkey, lo_linenumber limit 2000";

#[test]
fn the_cli_submits_waits_downloads_lists_stops_and_deletes() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let expected = server.run(SQL, "ssb").into_bytes();
    let dir = tempfile::tempdir().expect("tempdir");

    // query: submit, wait, download; no progress output when stdout is not a terminal.
    let file = dir.path().join("out.csv");
    let out = spool(
        &server,
        &[
            "query",
            SQL,
            "--project",
            "ssb",
            "-o",
            file.to_str().expect("utf-8"),
        ],
    );
    ok(&out);
    assert_eq!(stderr(&out), "", "no progress bars off a terminal");
    assert_eq!(std::fs::read(&file).expect("file"), expected);

    // submit prints the id; status and get find it; get without -o writes to stdout.
    let id = ok(&spool(&server, &["submit", SQL, "--project", "ssb"]))
        .trim()
        .to_owned();
    let line = ok(&spool(&server, &["status", &id, "--wait"]));
    assert!(
        line.starts_with(&format!("{id}\tSUCCEEDED\t2000 rows")),
        "{line}"
    );
    let out = spool(&server, &["get", &id]);
    assert_eq!(out.stdout, expected);
    // --format reaches the server.
    let parquet = ok(&spool(
        &server,
        &[
            "submit",
            SQL,
            "--project",
            "ssb",
            "--format",
            "parquet",
            "--wait",
        ],
    ));
    let parquet_id = parquet.split('\t').next().expect("id").to_owned();
    let pq = spool(&server, &["get", &parquet_id]);
    assert_eq!(&pq.stdout[..4], b"PAR1");

    // ls: newest first, with state and project.
    let listing = ok(&spool(&server, &["ls", "--limit", "2"]));
    let rows: Vec<&str> = listing.lines().collect();
    assert_eq!(rows.len(), 3, "{listing}");
    assert!(
        rows[1].starts_with(&format!("{parquet_id}\tSUCCEEDED\tssb\tADMIN")),
        "{listing}"
    );
    assert!(rows[2].starts_with(&format!("{id}\t")), "{listing}");
    let failed = ok(&spool(&server, &["ls", "--state", "failed"]));
    assert_eq!(failed.lines().count(), 1, "only the header: {failed}");

    // A failed query: exit 1 with the reason.
    let out = spool(
        &server,
        &[
            "submit",
            "select nope from lineorder",
            "--project",
            "ssb",
            "--wait",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    // stop and rm.
    let slow = server.submit("select * from p_lineorder order by lo_orderkey", "ssb");
    let out = spool(&server, &["stop", &slow]);
    assert!(
        out.status.success() || stderr(&out).contains("already finished"),
        "{}",
        stderr(&out)
    );
    ok(&spool(&server, &["rm", &id]));
    let out = spool(&server, &["status", &id]);
    assert_eq!(code(&out), 1, "a deleted query is gone");
    let out = spool(&server, &["get", &id]);
    assert_eq!(code(&out), 1);
    ok(&spool(
        &server,
        &[
            "rm",
            "--older-than",
            "2999-01-01 00:00:00",
            "--project",
            "ssb",
        ],
    ));
    let (_, v) = server.json("GET", "/kylin/api/async_query?project=ssb", None);
    assert_eq!(v["data"]["queries"], json!([]), "every ssb query deleted");
}

#[test]
fn the_cli_resumes_a_partial_download_and_refuses_a_wrong_one() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let id = server.submit(SQL, "ssb");
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let expected = server.result(&id);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("part.csv");
    let path = file.to_str().expect("utf-8");

    // Half the file already there: the rest is fetched with a range, the digest checks out.
    std::fs::write(&file, &expected[..expected.len() / 2]).expect("write");
    ok(&spool(&server, &["get", &id, "-o", path]));
    assert_eq!(std::fs::read(&file).expect("file"), expected);
    let metrics = server
        .send("GET", "/metrics", Some(ADMIN), None)
        .text()
        .expect("metrics");
    assert!(
        metrics.contains(
            "spool_http_requests_total{route=\"/kylin/api/async_query/{id}/result\",method=\"GET\",status=\"206\"} 1"
        ),
        "the rest came as a range: {metrics}"
    );
    // Complete already: nothing to fetch, still checked.
    ok(&spool(&server, &["get", &id, "-o", path]));
    assert_eq!(std::fs::read(&file).expect("file"), expected);

    // A wrong prefix: the resumed file's digest differs, so it is removed and the exit is 3.
    let mut wrong = expected[..expected.len() / 2].to_vec();
    wrong[0] ^= 0x20;
    std::fs::write(&file, &wrong).expect("write");
    let out = spool(&server, &["get", &id, "-o", path]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    assert!(!Path::new(&file).exists(), "the bad file is removed");
    // Run again: a fresh, whole download.
    ok(&spool(&server, &["get", &id, "-o", path]));
    assert_eq!(std::fs::read(&file).expect("file"), expected);
}

#[test]
fn the_cli_takes_credentials_from_flags_environment_or_a_profile_and_exits_by_cause() {
    let server = Server::start("workers = 1\nsample_sf = 0.002\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[default]\nurl = \"http://127.0.0.1:9\"\nuser = \"nobody\"\npassword = \"x\"\n\n\
             [local]\nurl = \"{}\"\nuser = \"ADMIN\"\npassword = \"KYLIN\"\n",
            server.base
        ),
    )
    .expect("profiles");
    let bare = |args: &[&str]| {
        Command::new(cli_binary())
            .args(args)
            .env_remove("SPOOL_URL")
            .env_remove("SPOOL_USER")
            .env_remove("SPOOL_PASSWORD")
            .env_remove("SPOOL_PROFILE")
            .env("SPOOL_PROFILES", &profiles)
            .output()
            .expect("running spool")
    };
    // A profile by name.
    let id = ok(&bare(&[
        "--profile",
        "local",
        "submit",
        "select 1 as n",
        "--project",
        "ssb",
    ]));
    let id = id.trim();
    assert_eq!(server.wait(id)["data"]["status"], "SUCCESSFUL");
    // Flags win over the profile.
    let out = bare(&[
        "--url",
        &server.base,
        "--user",
        "ADMIN",
        "--password",
        "KYLIN",
        "status",
        id,
    ]);
    ok(&out);
    // The environment wins over the profile.
    let out = Command::new(cli_binary())
        .args(["status", id])
        .env("SPOOL_PROFILES", &profiles)
        .env("SPOOL_URL", &server.base)
        .env("SPOOL_USER", "ADMIN")
        .env("SPOOL_PASSWORD", "KYLIN")
        .output()
        .expect("spool");
    ok(&out);

    // Exit codes: 3 for the server or the credentials, 2 for usage.
    let out = bare(&["status", id]); // the default profile points at a closed port
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    let out = bare(&["--profile", "local", "--password", "wrong", "status", id]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(code(&bare(&["--profile", "local"])), 2, "no subcommand");
    assert_eq!(code(&bare(&["--profile", "local", "frobnicate"])), 2);
    assert_eq!(code(&bare(&["--profile", "missing", "ls"])), 2);
    let out = bare(&[
        "--profile",
        "local",
        "submit",
        "select 1",
        "--format",
        "pdf",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = bare(&["--profile", "local", "ls", "--state", "done"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn on_a_terminal_the_cli_shows_progress() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("out.csv");
    // `script` (util-linux) gives the command a terminal and copies what it shows.
    let command = format!(
        "{} query 'select * from p_lineorder' --project ssb -o {}",
        cli_binary().display(),
        file.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SPOOL_URL", &server.base)
        .env("SPOOL_USER", "ADMIN")
        .env("SPOOL_PASSWORD", "KYLIN")
        .env("SPOOL_PROFILES", dir.path().join("none.toml"))
        .output()
        .expect("script (util-linux) runs the CLI on a terminal");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(" rows, "),
        "the wait shows rows, bytes and time: {shown:?}"
    );
    assert!(
        std::fs::metadata(&file).expect("file").len() > 100_000,
        "the result was written"
    );
}
