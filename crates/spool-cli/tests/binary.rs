//! The `spool` binary as built. Having an integration test is also what makes
//! `cargo test --workspace` build the binary before any test runs, so the e2e suite
//! (`tests/e2e/cli.rs`) finds it beside the server even in an empty target directory.

use std::process::Command;

#[test]
fn the_binary_names_its_version_and_refuses_an_unknown_subcommand() {
    let spool = env!("CARGO_BIN_EXE_spool");
    let out = Command::new(spool).arg("--version").output().expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("spool {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(spool)
        .arg("frobnicate")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("frobnicate"),
        "{out:?}"
    );
}
