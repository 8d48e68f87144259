//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: what CI runs: format check, clippy with warnings denied, every test, tidy.
//! - `tidy`: the dependency-direction check (also a plain `#[test]`, so `cargo test` runs it).

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
        _ => {
            eprintln!("usage: cargo xtask <ci|tidy>");
            eprintln!("  ci    fmt check, clippy -D warnings, all tests, tidy");
            eprintln!("  tidy  check that crate dependencies point inward only");
            bail!("unknown or missing task");
        }
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
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
    // `cargo test --workspace` builds the server binary (spool-server has an integration test)
    // before it runs any test, so the e2e tests always start a fresh binary.
    cargo(&["test", "--workspace"])?;
    eprintln!("ci: all green");
    Ok(())
}
