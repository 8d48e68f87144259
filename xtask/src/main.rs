//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: what CI runs: format check, clippy with warnings denied, every test, tidy.
//! - `tidy`: the dependency-direction check (also a plain `#[test]`, so `cargo test` runs it).
//! - `gen-ssb --sf N --out DIR [--seed S] [--threads T]`: SSB data as a project folder, made by
//!   the release server binary's `gen-ssb` (xtask itself stays free of product crates).
//! - `bench [--sf N] [--runs N]`: the release server measured; see `bench.rs`.
//! - `services start|stop`: the PostgreSQL, S3 and Spark servers the tests use, for a shell
//!   (`ci` starts and stops its own); see `services.rs` and `spark.rs`.

mod bench;
mod services;
mod spark;
mod tidy;

use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("tidy") => {
            tidy::check_dependencies(&tidy::metadata()?)?;
            println!("tidy: dependency graph follows the allow-list");
            Ok(())
        }
        Some("bench") => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            bench::run(&rest)
        }
        Some("services") => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            services::command(&rest)
        }
        Some("gen-ssb") => {
            let rest: Vec<String> = std::env::args().skip(2).collect();
            let mut args = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "spool-server",
                "--",
                "gen-ssb",
            ];
            args.extend(rest.iter().map(String::as_str));
            cargo(&args)
        }
        _ => {
            eprintln!("usage: cargo xtask <ci|tidy|gen-ssb|bench>");
            eprintln!("  ci       fmt check, clippy -D warnings, all tests, tidy");
            eprintln!("  tidy     check that crate dependencies point inward only");
            eprintln!("  gen-ssb  --sf N --out DIR [--seed S] [--threads T]: SSB Parquet data");
            eprintln!("  bench    [--sf N] [--runs N]: SSB through the API vs in-process");
            eprintln!("  services start|stop: PostgreSQL and S3 test servers on loopback");
            bail!("unknown or missing task");
        }
    }
}

/// The checkout xtask runs in. `cargo run` says where xtask's manifest is at run time; the
/// compile-time path is only a fallback, because a target directory shared between two clones
/// (CI's and a developer's) may run a binary built in the other one.
pub(crate) fn workspace() -> std::path::PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    xtask
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(xtask)
}

pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with(args, &[])
}

/// Runs cargo with `args` and the extra environment `env`.
pub(crate) fn cargo_with(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let mut command = Command::new(cargo);
    command.args(args);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    // `cargo run` gives xtask the package variables of xtask itself. Some build scripts (ring's)
    // track `CARGO_MANIFEST_DIR`, so passing them on would make every nested build look different
    // from a build started in the shell, and the two would rebuild Polars' dependency chain in
    // turn. The nested cargo sets these for each package it builds anyway.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    tidy::check_dependencies(&tidy::metadata()?)?;
    eprintln!("tidy: ok");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // Build first, so that the servers below do not wait through a compile.
    cargo(&["test", "--workspace", "--no-run"])?;
    // The real servers the PostgreSQL, S3 and multi-process suites run against; stopped by pid
    // when this value is dropped, whether the tests pass or not.
    let services = services::Services::start(services::Fsync::Off)?;
    // `cargo test --workspace` builds the server and `spool` binaries (spool-server and spool-cli
    // have integration tests) before it runs any test, so the e2e tests always start a fresh binary.
    let tested = cargo_with(&["test", "--workspace"], &services.env());
    services.stop();
    tested?;
    eprintln!("ci: all green");
    Ok(())
}
