//! The SQL sandbox against the quoting attack (a quoted name or literal that sqlparser prints so
//! that it ends early, leaving the rest to be read as SQL by the engine), through the real
//! server, and what a user who is not an admin learns of the server's folders.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, basic};

/// A small sample: fast to generate.
const SMALL: &str = "workers = 2\nsample_sf = 0.002\n";

/// What the secret file holds: found in no answer, if the sandbox holds.
pub(crate) const SECRET: &str = "TOPSECRET";

/// Writes a CSV file the server can read, outside every project, and returns its path.
pub(crate) fn plant_secret(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("secret.csv");
    std::fs::write(&path, format!("k,v\n1,{SECRET}\n")).expect("secret");
    path.to_str().expect("utf-8").to_owned()
}

/// The attack and its variants, each with what names it: a double-quoted alias, a backtick
/// alias, a table alias, a subquery alias, a nested subquery, a string literal, an escaped
/// string literal (each reads `secret` by path once sqlparser has printed it), and `TABLE x`,
/// which names a relation as text no relation check saw.
pub(crate) fn attacks(secret: &str, table: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "double-quoted alias",
            format!(r#"select 1 as "x\"" , k, v from read_csv('{secret}') --""#),
        ),
        (
            "backtick alias",
            format!("select 1 as `x\\`` , k, v from read_csv('{secret}') --`"),
        ),
        (
            "table alias",
            format!(r#"select * from {table} as "t\"" , read_csv('{secret}') --""#),
        ),
        (
            "subquery alias",
            format!(r#"select * from (select 1 as k) as "s\"" , read_csv('{secret}') --""#),
        ),
        (
            "nested",
            format!(
                r#"select * from {table} where 1 in (select 1 as "x\"" , k from read_csv('{secret}')) --")"#
            ),
        ),
        (
            "string literal",
            format!(r"select 'x\'' , k from read_csv(''{secret}'') --' as v from {table}"),
        ),
        (
            "TABLE relation",
            format!("select * from {table} union all table other.secret"),
        ),
        (
            "escaped string literal",
            format!(r"select E'x\' union select v from read_csv(\'{secret}\') --' from {table}"),
        ),
    ]
}

/// Submits each attack as ADMIN and checks it ends FAILED without reading the secret.
pub(crate) fn each_attack_is_refused(server: &Server, project: &str, table: &str) {
    let secret = plant_secret(&server.data_dir);
    for (variant, sql) in attacks(&secret, table) {
        let id = server.submit(&sql, project);
        let v = server.wait(&id);
        assert_eq!(v["data"]["status"], "FAILED", "{variant}: {sql}: {v}");
        let info = v["data"]["info"].as_str().expect("info");
        assert!(!info.contains(SECRET), "{variant}: {info}");
        assert!(
            info.contains("quoted name")
                || info.contains("string literal")
                || info.contains("is not supported; write SELECT * FROM")
                || info.contains("SQL syntax error"),
            "{variant}: {info}"
        );
        assert_eq!(
            v["data"]["error_code"], "SPOOL-QUERY-INVALID",
            "{variant}: {v}"
        );
        // The synchronous call refuses it the same way.
        let (status, body) = server.json(
            "POST",
            "/kylin/api/query",
            Some(&json!({"sql": sql, "project": project}).to_string()),
        );
        assert!(!body.to_string().contains(SECRET), "{variant}: {body}");
        assert_ne!(status, 200, "{variant}: {body}");
    }
    // The same shapes without the trick run: the server is answering queries, not refusing all.
    let plain = server.run(
        &format!(r#"select 1 as "x", 2 as `y`, 'it''s' as z from {table} as "t" limit 1"#),
        project,
    );
    assert_eq!(plain.trim(), "1,2,it's", "{plain}");
}

#[test]
fn the_quoting_attack_and_its_variants_are_refused_on_polars() {
    let server = Server::start(SMALL);
    each_attack_is_refused(&server, "ssb", "dates");
}

/// Waits until `user` can submit (a user added to a running server takes a moment to load).
fn submit_as(server: &Server, auth: &str, sql: &str, project: &str) -> String {
    let body = json!({ "sql": sql, "project": project }).to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = server.send("POST", "/kylin/api/async_query", Some(auth), Some(&body));
        if res.status().as_u16() == 200 {
            let v: Value = res.json().expect("json");
            return v["data"]["queryID"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "no submit: {}", res.status());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_user_who_is_not_an_admin_learns_no_folder_of_the_server() {
    let server = Server::start(SMALL);
    // A project whose table is a folder of Parquet files holding none: Polars' error names
    // the folder's path.
    let broken = server.data_dir.join("projects").join("broken");
    std::fs::create_dir_all(broken.join("T")).expect("project");
    server.add_user(
        &["alice", "--project", "ssb", "--project", "broken"],
        "wonderland",
    );
    let alice = basic("alice", "wonderland");
    let data_dir = std::path::absolute(&server.data_dir).expect("absolute");
    let data_dir = data_dir.to_str().expect("utf-8");

    let id = submit_as(&server, &alice, "select count(*) from dates", "ssb");
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let path = format!("/kylin/api/async_query/{id}/result_path");
    let res = server.send("GET", &path, Some(&alice), None);
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = res.json().expect("json");
    let location = v["data"].as_str().expect("location");
    assert!(!location.contains(data_dir), "{location}");
    assert!(!location.starts_with('/'), "{location}");
    // An admin is told where the file is.
    let (_, v) = server.json("GET", &path, None);
    let location = v["data"].as_str().expect("location");
    assert!(location.starts_with(data_dir), "{location}");
    assert!(std::path::Path::new(location).is_file(), "{location}");

    let id = submit_as(&server, &alice, "select * from t", "broken");
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/status"),
        Some(&alice),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status: Value = res.json().expect("json");
    while status["data"]["status"] == "RUNNING" || status["data"]["status"] == "PENDING" {
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
        status = server.status(&id);
    }
    assert_eq!(status["data"]["status"], "FAILED", "{status}");
    let info = status["data"]["info"].as_str().expect("info");
    assert!(!info.contains(data_dir), "{info}");
    assert!(info.contains("<projects>"), "{info}");
}
