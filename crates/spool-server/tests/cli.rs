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
