//! The command line of the binary. (Having this integration test also makes `cargo test` build
//! the `spool-server` executable that the e2e tests in `tests/` start.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spool-server");

#[test]
fn help_lists_the_settings() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--data-dir",
        "--config",
        "--workers",
        "--log-level",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn a_broken_config_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("spool.toml");
    std::fs::write(&config, "workers = \"many\"\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env_remove("SPOOL_WORKERS")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parsing config file"), "{err}");
}

fn user_cmd(
    data_dir: &std::path::Path,
    args: &[&str],
    password: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).arg("user").args(args);
    match password {
        Some(p) => cmd.env("SPOOL_PASSWORD", p),
        None => cmd.env_remove("SPOOL_PASSWORD"),
    };
    cmd.output().expect("run")
}

#[test]
fn users_are_managed_without_editing_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    ok(user_cmd(
        &data,
        &["add", "alice", "--project", "ssb", "--project", "DEFAULT"],
        Some("s3cret"),
    ));
    ok(user_cmd(&data, &["add", "ops", "--admin"], Some("pw")));
    let list = ok(user_cmd(&data, &["list"], None));
    assert_eq!(
        list,
        "ADMIN\tadmin\t\nalice\tuser\tssb,DEFAULT\nops\tadmin\t\n"
    );
    let file = std::fs::read_to_string(data.join("users.toml")).expect("users file");
    assert!(!file.contains("s3cret"), "passwords are never stored");
    assert!(file.contains("$argon2id$"));

    ok(user_cmd(&data, &["passwd", "alice"], Some("n3w")));
    assert_ne!(
        std::fs::read_to_string(data.join("users.toml")).expect("users file"),
        file
    );
    ok(user_cmd(&data, &["remove", "ops"], None));
    assert_eq!(
        ok(user_cmd(&data, &["list"], None)),
        "ADMIN\tadmin\t\nalice\tuser\tssb,DEFAULT\n"
    );

    let dup = user_cmd(&data, &["add", "alice"], Some("x"));
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let missing = user_cmd(&data, &["remove", "nobody"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user nobody"));
    let empty = user_cmd(&data, &["add", "bob"], Some(""));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("must not be empty"));
}

#[test]
fn the_data_dir_may_follow_the_subcommand_as_the_readme_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["user", "add", "alice", "--project", "ssb", "--data-dir"])
        .arg(&data)
        .env("SPOOL_PASSWORD", "wonderland")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = Command::new(BIN)
        .args(["user", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    let text = String::from_utf8(list.stdout).expect("utf-8");
    assert!(text.contains("alice\tuser\tssb"), "{text}");
}
