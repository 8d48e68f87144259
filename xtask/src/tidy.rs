//! Tidy checks. The dependency rule of `docs/ARCHITECTURE.md`, enforced from `cargo metadata`:
//! dependencies point inward only, and only `spool-server` names concrete adapters.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// For each workspace package, the workspace packages it may depend on (normal or dev).
const ALLOWED: &[(&str, &[&str])] = &[
    ("spool-domain", &[]),
    ("spool-ssb", &[]),
    ("spool-ports", &["spool-domain"]),
    ("spool-core", &["spool-domain", "spool-ports"]),
    ("spool-store-sled", &["spool-domain", "spool-ports"]),
    (
        "spool-engine-polars",
        &[
            "spool-domain",
            "spool-ports",
            "spool-formats",
            "spool-planner",
            "spool-catalog",
            "spool-ssb",
        ],
    ),
    ("spool-formats", &["spool-domain", "spool-ports"]),
    ("spool-planner", &[]),
    (
        "spool-catalog",
        &["spool-domain", "spool-ports", "spool-planner"],
    ),
    (
        "spool-engine-spark",
        &[
            "spool-domain",
            "spool-ports",
            "spool-formats",
            "spool-planner",
            "spool-catalog",
        ],
    ),
    ("spool-store-postgres", &["spool-domain", "spool-ports"]),
    ("spool-results-fs", &["spool-domain", "spool-ports"]),
    ("spool-engine-process", &["spool-domain", "spool-ports"]),
    ("spool-results-s3", &["spool-domain", "spool-ports"]),
    ("spool-http", &["spool-core", "spool-domain", "spool-ports"]),
    (
        "spool-server",
        &[
            "spool-core",
            "spool-domain",
            "spool-ports",
            "spool-http",
            "spool-store-sled",
            "spool-store-postgres",
            "spool-engine-polars",
            "spool-engine-spark",
            "spool-engine-process",
            "spool-catalog",
            "spool-results-fs",
            "spool-results-s3",
            "spool-ssb",
        ],
    ),
    ("spool-cli", &[]),
    // spool-engine-spark for its `oracle` feature only: Spark's own answers to raw SQL.
    ("spool-e2e", &["spool-ssb", "spool-engine-spark"]),
    ("xtask", &[]),
];

/// Returns `cargo metadata` for the workspace.
pub fn metadata() -> anyhow::Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(crate::workspace())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Returns the workspace-internal dependency edges, package -> dependencies.
fn edges(metadata: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    packages
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_owned();
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str())
                .filter(|d| members.contains(*d))
                .map(str::to_owned)
                .collect();
            Some((name, deps))
        })
        .collect()
}

/// Fails on any internal dependency edge that the allow-list does not name, and on any
/// workspace package the allow-list does not know.
pub fn check_dependencies(metadata: &Value) -> anyhow::Result<()> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for (package, deps) in edges(metadata) {
        let Some(ok) = allowed.get(package.as_str()) else {
            problems.push(format!(
                "{package} is not on the allow-list in xtask/src/tidy.rs"
            ));
            continue;
        };
        for dep in deps {
            if !ok.contains(&dep.as_str()) {
                problems.push(format!("{package} must not depend on {dep}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("dependency rule broken:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_follows_the_dependency_rule() {
        check_dependencies(&metadata().expect("metadata")).expect("tidy");
    }

    #[test]
    fn a_forbidden_edge_is_caught() {
        let fake = serde_json::json!({"packages": [
            {"name": "spool-http", "dependencies": [{"name": "spool-store-sled"}]},
            {"name": "spool-store-sled", "dependencies": []},
        ]});
        let err = check_dependencies(&fake).expect_err("http must not name an adapter");
        assert!(
            err.to_string()
                .contains("spool-http must not depend on spool-store-sled")
        );
    }
}
