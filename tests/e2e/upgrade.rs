//! Upgrades lose nothing: a data dir written by an earlier release (a committed fixture) is
//! opened and served; one written by a newer release is refused at start and left untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Server, server_binary};

const CSV_QUERY: &str = "e014162f-0f5e-440b-8621-277b9efa1978";
const JSON_QUERY: &str = "32c56aad-5b45-4673-ab74-94d5cf6986fb";
const FAILED_QUERY: &str = "19bf2a0e-f2a4-4ce7-8371-c5299aa90e67";

fn fixture() -> PathBuf {
    crate::harness::tests_dir().join("fixtures/data-format-1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every file under `dir` with its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read file"));
            }
        }
    }
    files
}

/// The fixture's results must outlive any retention period: the fixture is old by design.
const CONFIG: &str = "workers = 1\nsample_sf = 0\nresult_retain_days = 0\n";

#[test]
fn a_data_dir_from_an_earlier_release_is_served_as_it_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    copy_dir(&fixture(), &data);
    let config = tmp.path().join("spool.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let server = Server::start_on(&data, &config);

    let csv = server.status(CSV_QUERY);
    assert_eq!(csv["data"]["status"], "SUCCESSFUL", "{csv}");
    assert_eq!(csv["data"]["rows"], 4);
    assert_eq!(
        String::from_utf8(server.result(CSV_QUERY)).expect("utf-8"),
        "Amsterdam,NL,918000\nBeijing,CN,21540000\n\"Quebec, City\",CA,549000\nZurich,CH,\n"
    );
    let people: Value = serde_json::from_slice(&server.result(JSON_QUERY)).expect("json");
    assert_eq!(
        people,
        json!([
            {"country": "CA", "people": 549000},
            {"country": "CH", "people": null},
            {"country": "CN", "people": 21540000},
            {"country": "NL", "people": 918000}
        ])
    );
    let failed = server.status(FAILED_QUERY);
    assert_eq!(failed["data"]["status"], "FAILED");
    assert_eq!(failed["data"]["error_code"], "SPOOL-QUERY-INVALID");
    // The listing, conversions and new queries work on the old records.
    let (_, listed) = server.json("GET", "/kylin/api/async_query", None);
    assert_eq!(
        listed["data"]["queries"].as_array().expect("queries").len(),
        3
    );
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{CSV_QUERY}/result?format=json"),
        Some(crate::harness::ADMIN),
        None,
    );
    assert_eq!(res.status().as_u16(), 200);
    let fresh = server.run("select count(*) as n from cities", "DEFAULT");
    assert_eq!(fresh, "4\n");
}

#[test]
fn a_data_dir_from_a_newer_release_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    copy_dir(&fixture(), &data);
    std::fs::write(data.join("FORMAT"), "spool data format 2\n").expect("format");
    let config = tmp.path().join("spool.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let before = snapshot(&data);
    for args in [
        vec!["--bind", "127.0.0.1:0"],
        vec!["user", "add", "mallory", "--project", "DEFAULT"],
    ] {
        let out = Command::new(server_binary())
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env("SPOOL_PASSWORD", "secret-password")
            .output()
            .expect("spool-server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(
            stderr.contains(
                "was written by a newer Spool (format 2; this release reads formats up to 1)"
            ),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("left as it is"), "{stderr}");
    }
    assert!(snapshot(&data) == before, "nothing in the data dir changed");
}
