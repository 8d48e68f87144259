//! The query lifecycle beyond Kylin's polling, through the real server: waiting on submit,
//! long-polls, progress, Server-Sent Events, failure codes, and Kylin's own leniencies.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ADMIN, Server};

/// A small sample, and a byte cap that stops the unbounded query below if a test loses it.
const CONFIG: &str = "workers = 2\nsample_sf = 0.01\nmax_result_bytes = 2000000000\n";

/// A query that streams rows for as long as it is let run (about 150 million rows).
const ENDLESS: &str = "select * from p_lineorder cross join dates";

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

fn submit_body(server: &Server, body: &Value) -> Value {
    let (status, v) = server.json("POST", "/kylin/api/async_query", Some(&body.to_string()));
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn a_submit_with_wait_timeout_is_answered_successful_in_one_call() {
    let server = Server::start(CONFIG);
    let body = json!({
        "sql": "select count(*) from p_lineorder",
        "project": "ssb",
        "wait_timeout": 30,
    });
    let v = submit_body(&server, &body);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    assert_eq!(
        (&v["data"]["state"], &v["data"]["rows"]),
        (&json!("SUCCEEDED"), &json!(1))
    );
    let id = v["data"]["queryID"].as_str().expect("id");
    let csv = String::from_utf8(server.result(id)).expect("utf-8");
    assert_eq!(csv.lines().count(), 1, "{csv}");
}

#[test]
fn a_long_poll_is_answered_within_50_ms_of_the_end() {
    let server = Server::start(CONFIG);
    let id = server.submit(&format!("{ENDLESS} limit 1000000"), "ssb");
    let (status, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/status?wait=30"),
        None,
    );
    let answered = now_ms();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    let finished = v["data"]["finished_at"].as_i64().expect("finished_at");
    assert!(
        answered - finished < 50,
        "the long-poll answered {} ms after the query ended",
        answered - finished
    );
    assert_eq!(v["data"]["rows"], 1_000_000);
}

#[test]
fn progress_grows_while_an_export_runs_and_a_stop_is_cancelled() {
    let server = Server::start(CONFIG);
    let id = server.submit(ENDLESS, "ssb");
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        let v = server.status(&id);
        assert_eq!(v["data"]["status"], "RUNNING", "{v}");
        let rows = v["data"]["rows"].as_u64().expect("rows");
        // Rows count when a batch reaches the encoder, bytes when it is written: bytes may lag.
        assert!(v["data"]["bytes"].as_u64().is_some(), "{v}");
        if rows > 0 && seen.last().is_none_or(|&last| rows > last) {
            assert_eq!(v["data"]["state"], "RUNNING");
            seen.push(rows);
        }
        assert!(Instant::now() < deadline, "progress did not grow: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, v) = server.json("DELETE", &format!("/kylin/api/async_query/stop/{id}"), None);
    assert_eq!(status, 200, "{v}");
    let v = server.status(&id);
    let data = &v["data"];
    assert_eq!(
        (&data["status"], &data["info"], &data["state"]),
        (
            &json!("FAILED"),
            &json!("stopped by user"),
            &json!("CANCELLED")
        ),
        "{v}"
    );
    assert_eq!(
        (&data["error_code"], &data["retryable"]),
        (&json!("SPOOL-QUERY-CANCELLED"), &json!(false))
    );
    assert!(
        data["bytes"].as_u64().expect("bytes") > 0,
        "bytes were written: {v}"
    );
}

#[test]
fn events_stream_progress_and_the_final_status_then_close() {
    let server = Server::start(CONFIG);
    let id = server.submit(&format!("{ENDLESS} limit 3000000"), "ssb");
    let mut res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/events"),
        Some(ADMIN),
        None,
    );
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut text = String::new();
    res.read_to_string(&mut text).expect("the stream ends");
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((
                name.to_owned(),
                serde_json::from_str(data).expect("JSON data"),
            ))
        })
        .collect();
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "status");
    assert_eq!(
        (&last["status"], &last["rows"]),
        (&json!("SUCCESSFUL"), &json!(3_000_000))
    );
    let progress: Vec<u64> = events[..events.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert_eq!(
                (name.as_str(), &data["status"]),
                ("progress", &json!("RUNNING"))
            );
            data["rows"].as_u64().expect("rows")
        })
        .collect();
    assert!(!progress.is_empty(), "{text}");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "rows never go back: {progress:?}"
    );
}

#[test]
fn failures_carry_codes_and_kylins_leniencies_hold() {
    let server = Server::start(CONFIG);
    let bad = server.submit("select nope from p_lineorder", "ssb");
    let v = server.wait(&bad);
    assert_eq!(
        (
            &v["data"]["status"],
            &v["data"]["error_code"],
            &v["data"]["retryable"]
        ),
        (
            &json!("FAILED"),
            &json!("SPOOL-QUERY-INVALID"),
            &json!(false)
        ),
        "{v}"
    );
    let missing = server.submit("select 1", "no_such_project");
    let v = server.wait(&missing);
    assert_eq!(v["data"]["error_code"], "KE-010001201", "{v}");

    // Numbers as strings, limit <= 0 as none, an empty separator as a comma, the project in
    // another case: as Kylin reads them.
    let body = json!({
        "sql": "select lo_orderkey, lo_linenumber from p_lineorder order by 1, 2",
        "project": "SSB",
        "limit": "5",
        "offset": -1,
        "separator": "",
        "wait_timeout": "30",
    });
    let v = submit_body(&server, &body);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    let id = v["data"]["queryID"].as_str().expect("id").to_owned();
    let csv = String::from_utf8(server.result(&id)).expect("utf-8");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().all(|l| l.split(',').count() == 2), "{csv}");
    for project in ["ssb", "SSB", "Ssb"] {
        let (status, v) = server.json(
            "GET",
            &format!("/kylin/api/async_query/{id}/metadata?project={project}"),
            None,
        );
        assert_eq!(status, 200, "{project}: {v}");
    }
    let (status, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/filestatus"),
        None,
    );
    assert_eq!((status, v["data"].as_u64().is_some()), (200, true), "{v}");
    let (status, v) = server.json("DELETE", "/kylin/api/async_query?project=ssb", None);
    assert_eq!((status, &v["data"]), (200, &json!(true)), "{v}");
    assert_eq!(server.status(&id)["data"]["status"], "MISSING");

    // Every error has a stable code, a path that is not UTF-8 included.
    let res = server.send(
        "GET",
        "/kylin/api/async_query/%FF%FE/status",
        Some(ADMIN),
        None,
    );
    assert_eq!(res.status().as_u16(), 400);
    let v: Value = res.json().expect("the envelope");
    assert_eq!(
        (&v["code"], &v["error_code"]),
        (&json!("999"), &json!("SPOOL-BAD-REQUEST")),
        "{v}"
    );
    let res = server.send("GET", "/kylin/api/async_query/x/status", None, None);
    let v: Value = res.json().expect("the envelope");
    assert_eq!(v["error_code"], "KE-010003208", "{v}");
}

#[test]
fn downloads_carry_the_digest_computed_while_writing() {
    use base64::Engine;
    use sha2::Digest;
    let server = Server::start(CONFIG);
    let body = json!({
        "sql": "select * from p_lineorder order by lo_orderkey, lo_linenumber",
        "project": "ssb",
        "format": "parquet",
        "wait_timeout": 50,
    });
    let v = submit_body(&server, &body);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    let id = v["data"]["queryID"].as_str().expect("id").to_owned();
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(ADMIN),
        None,
    );
    let header = res.headers()["repr-digest"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let bytes = res.bytes().expect("body");
    let digest = sha2::Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        v["data"]["sha256"],
        hex.as_str(),
        "the status's digest is the file's"
    );
    let (_, meta) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/metadata"),
        None,
    );
    assert_eq!(meta["sha256"], hex.as_str(), "and the metadata's: {meta}");
    assert_eq!(
        meta["data"][0][0], "LO_ORDERKEY",
        "Kylin's pair of lists stays as it was"
    );
    assert_eq!(
        header,
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    );
    // A range carries the whole file's digest, so a resumed download can check the whole.
    let res = server.http_get(
        &format!("/kylin/api/async_query/{id}/result"),
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(
        res.headers()["repr-digest"].to_str().expect("ascii"),
        header
    );
}

#[test]
fn idempotent_submits_store_one_query_and_a_changed_body_is_refused() {
    let server = Server::start(CONFIG);
    let post = |body: &Value, key: &str| {
        let res = server.http_send(
            "POST",
            "/kylin/api/async_query",
            &[("Idempotency-Key", key)],
            Some(&body.to_string()),
        );
        let status = res.status().as_u16();
        let replayed = res.headers().contains_key("idempotent-replayed");
        (status, replayed, res.json::<Value>().expect("json"))
    };
    let body = json!({"sql": "select count(*) from p_lineorder", "project": "ssb"});
    let (status, replayed, first) = post(&body, "nightly-2026-12-01");
    assert_eq!((status, replayed), (200, false), "{first}");
    let id = first["data"]["queryID"].as_str().expect("id").to_owned();
    let (status, replayed, again) = post(&body, "nightly-2026-12-01");
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again["data"]["queryID"], id.as_str());
    let changed = json!({"sql": "select count(*) from dates", "project": "ssb"});
    let (status, _, conflict) = post(&changed, "nightly-2026-12-01");
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error_code"], "SPOOL-IDEMPOTENCY-CONFLICT");
    // One query was stored: deleting it leaves nothing of this key.
    server.wait(&id);
    let (status, _) = server.json("DELETE", &format!("/kylin/api/async_query/{id}"), None);
    assert_eq!(status, 200);
    let (status, replayed, fresh) = post(&changed, "nightly-2026-12-01");
    assert_eq!(
        (status, replayed),
        (200, false),
        "a deleted query frees its key: {fresh}"
    );
}

#[test]
fn downloads_are_compressed_on_the_fly_unless_ranged() {
    use std::io::Read as _;
    let server = Server::start(CONFIG);
    let id = server.submit(
        "select * from p_lineorder order by lo_orderkey, lo_linenumber",
        "ssb",
    );
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let plain = server.result(&id);
    let path = format!("/kylin/api/async_query/{id}/result");
    for (coding, accept) in [("gzip", "gzip, deflate"), ("zstd", "zstd, gzip;q=0.5")] {
        let res = server.http_get(&path, &[("Accept-Encoding", accept)]);
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers()["content-encoding"], coding);
        assert!(res.headers().get("content-length").is_none());
        assert!(
            res.headers().get("repr-digest").is_none(),
            "the digest is of the stored file"
        );
        let packed = res.bytes().expect("body").to_vec();
        assert!(
            packed.len() < plain.len() * 3 / 4,
            "{coding}: {} of {}",
            packed.len(),
            plain.len()
        );
        let mut unpacked = Vec::new();
        match coding {
            "gzip" => flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut unpacked)
                .expect("gunzip"),
            _ => zstd::stream::read::Decoder::new(&packed[..])
                .expect("zstd")
                .read_to_end(&mut unpacked)
                .expect("unzstd"),
        };
        assert!(unpacked == plain, "{coding} decompresses to the file");
    }
    // A ranged request gets identity bytes of the stored file.
    let res = server.http_get(
        &path,
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=10-19")],
    );
    assert_eq!(res.status().as_u16(), 206);
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.bytes().expect("body").to_vec(), plain[10..20].to_vec());
    // No Accept-Encoding, or only identity: the file as stored.
    let res = server.http_get(&path, &[("Accept-Encoding", "identity")]);
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.bytes().expect("body").to_vec(), plain);
}

#[test]
fn older_than_is_read_in_the_configured_time_zone() {
    let server = Server::start(&format!("{CONFIG}time_zone = \"Asia/Shanghai\"\n"));
    let id = server.submit("select count(*) from dates", "ssb");
    server.wait(&id);
    let shanghai_now = chrono::Utc::now() + chrono::Duration::hours(8);
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d%%20%H:%M:%S").to_string();
    // A minute ago in Shanghai: the query is newer, so it stays (read as UTC, this would be
    // eight hours ahead and delete it).
    let before = at(shanghai_now - chrono::Duration::minutes(1));
    let (status, v) = server.json(
        "DELETE",
        &format!("/kylin/api/async_query?older_than={before}"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.status(&id)["data"]["status"], "SUCCESSFUL");
    let after = at(shanghai_now + chrono::Duration::minutes(1));
    let (status, v) = server.json(
        "DELETE",
        &format!("/kylin/api/async_query?older_than={after}"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.status(&id)["data"]["status"], "MISSING");
}

/// Starts the server with the config file `text`, expects it to refuse, and returns what it
/// said on stderr.
fn refused_start(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("spool.toml");
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(crate::harness::server_binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success(), "the server started with {text:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_time_zone_stops_the_start_with_a_clear_message() {
    let stderr = refused_start("time_zone = \"Mars/Olympus\"\n");
    assert!(
        stderr.contains("Mars/Olympus") && stderr.contains("IANA"),
        "{stderr}"
    );
}

#[test]
fn an_identical_query_reuses_a_result_until_a_table_file_changes() {
    let server = Server::start(CONFIG);
    let sql = "select d_year, count(*) from dates group by d_year order by d_year";
    let body = json!({"sql": sql, "project": "ssb", "reuse_max_age": 3600, "wait_timeout": 30});
    let first = submit_body(&server, &body);
    assert_eq!(
        (&first["data"]["status"], &first["data"]["cache_hit"]),
        (&json!("SUCCESSFUL"), &json!(false)),
        "nothing to reuse yet: {first}"
    );
    let first_id = first["data"]["queryID"].as_str().expect("id").to_owned();
    let expected = server.result(&first_id);

    // The same query answers at once from a copy of that result, under a new id.
    let again = submit_body(
        &server,
        &json!({"sql": sql, "project": "ssb", "reuse_max_age": "3600"}),
    );
    assert_eq!(
        (&again["data"]["status"], &again["data"]["cache_hit"]),
        (&json!("SUCCESSFUL"), &json!(true)),
        "{again}"
    );
    let reused_id = again["data"]["queryID"].as_str().expect("id").to_owned();
    assert_ne!(reused_id, first_id);
    assert_eq!(
        server.status(&reused_id)["data"]["reused_from"],
        first_id.as_str()
    );
    // Without reuse_max_age it runs as ever.
    let fresh = server.submit(sql, "ssb");
    assert_eq!(server.wait(&fresh)["data"]["cache_hit"], Value::Null);
    // Deleting the original keeps the copy.
    let (status, _) = server.json(
        "DELETE",
        &format!("/kylin/api/async_query/{first_id}"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(server.result(&reused_id), expected);

    // A table file that changes (here its modification time) is a miss: the query runs.
    let dates = std::fs::read_dir(server.data_dir.join("projects/ssb"))
        .expect("project dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .to_ascii_lowercase()
                    .starts_with("dates")
            })
        })
        .expect("the dates table");
    let file = if dates.is_dir() {
        std::fs::read_dir(&dates)
            .expect("dir")
            .flatten()
            .next()
            .expect("a file")
            .path()
    } else {
        dates
    };
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open")
        .set_modified(later)
        .expect("touch");
    let miss = submit_body(&server, &body);
    assert_eq!(miss["data"]["cache_hit"], false, "{miss}");
    let miss_id = miss["data"]["queryID"].as_str().expect("id");
    assert_eq!(
        server.result(miss_id),
        expected,
        "the same rows, freshly computed"
    );
}

#[test]
fn a_result_stored_compressed_downloads_as_the_compressed_file() {
    use std::io::Read as _;
    let server = Server::start(CONFIG);
    let sql = "select * from p_lineorder order by lo_orderkey, lo_linenumber";
    let plain_id = server.submit(sql, "ssb");
    server.wait(&plain_id);
    let plain = server.result(&plain_id);
    for (compression, extension) in [("gzip", "gz"), ("ZSTD", "zst")] {
        let body =
            json!({"sql": sql, "project": "ssb", "compression": compression, "wait_timeout": 50});
        let v = submit_body(&server, &body);
        assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
        let id = v["data"]["queryID"].as_str().expect("id").to_owned();
        assert_eq!(v["data"]["uncompressed_bytes"], plain.len(), "{v}");
        let res = server.http_get(
            &format!("/kylin/api/async_query/{id}/result"),
            &[("Accept-Encoding", "gzip")],
        );
        assert!(
            res.headers().get("content-encoding").is_none(),
            "served as stored"
        );
        assert!(
            res.headers()["content-disposition"]
                .to_str()
                .expect("ascii")
                .contains(&format!("result.csv.{extension}")),
            "{:?}",
            res.headers()["content-disposition"]
        );
        let packed = res.bytes().expect("body").to_vec();
        let (status, sizes) = server.json(
            "GET",
            &format!("/kylin/api/async_query/{id}/file_status"),
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(
            sizes["data"],
            json!({"bytes": packed.len(), "uncompressed_bytes": plain.len()})
        );
        let mut unpacked = Vec::new();
        if extension == "gz" {
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut unpacked)
                .expect("gunzip");
        } else {
            zstd::stream::read::Decoder::new(&packed[..])
                .expect("zstd")
                .read_to_end(&mut unpacked)
                .expect("unzstd");
        }
        assert!(
            unpacked == plain,
            "{compression}: the same CSV once decompressed"
        );
    }
    let bad = json!({"sql": sql, "project": "ssb", "compression": "lz4"});
    let (status, v) = server.json("POST", "/kylin/api/async_query", Some(&bad.to_string()));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["msg"].as_str().expect("msg").contains("gzip, zstd, none"),
        "{v}"
    );
}

/// A webhook receiver on loopback: records each request's headers and body and answers the
/// statuses of `answers` in turn (then 200).
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

/// One request a receiver got: its headers (names in lower case) and body.
type Received = (Vec<(String, String)>, String);

impl Receiver {
    fn start_on(port: u16, answers: Vec<u16>) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&got);
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).ok();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim().split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                std::io::Read::read_exact(&mut reader, &mut body).ok();
                seen.lock()
                    .expect("lock")
                    .push((headers, String::from_utf8_lossy(&body).into_owned()));
                let status = answers.next().unwrap_or(200);
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { port, got }
    }

    fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got.lock().expect("lock").clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhooks after {within:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

const SECRET: &str = "a-long-webhook-secret-for-tests";

/// HMAC-SHA256, as a receiver computes it to check the signature.
fn hmac(key: &[u8], message: &[u8]) -> String {
    use sha2::Digest;
    let mut padded = [0u8; 64];
    padded[..key.len()].copy_from_slice(key);
    let inner = sha2::Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(padded.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(headers: &[(String, String)], body: &str) {
    let signature = &headers
        .iter()
        .find(|(k, _)| k == "spool-signature")
        .expect("signed")
        .1;
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .expect("t=...,v1=...");
    assert_eq!(
        v1,
        hmac(SECRET.as_bytes(), format!("{t}.{body}").as_bytes()),
        "a valid signature"
    );
}

#[test]
fn a_webhook_is_signed_delivered_and_retried_until_the_receiver_answers() {
    let up = Receiver::start_on(free_port(), vec![500]);
    let down_port = free_port();
    let server = Server::start(&format!(
        "{CONFIG}callback_secret = \"{SECRET}\"\ncallback_allow = [\"127.0.0.1\"]\n"
    ));
    let hook = |port: u16, sql: &str| {
        let body = json!({"sql": sql, "project": "ssb", "callback_url": format!("http://127.0.0.1:{port}/done")});
        submit_body(&server, &body)["data"]["queryID"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    // The first answer is a 500: the webhook comes again, and the second is acknowledged.
    let id = hook(up.port, "select count(*) from dates");
    let got = up.wait_for(2, Duration::from_secs(20));
    for (headers, body) in &got {
        verify(headers, body);
        let v: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(
            (&v["data"]["queryID"], &v["data"]["status"]),
            (&json!(id), &json!("SUCCESSFUL")),
            "{v}"
        );
    }
    let attempts: Vec<&str> = got
        .iter()
        .map(|(h, _)| {
            h.iter()
                .find(|(k, _)| k == "spool-attempt")
                .map_or("", |(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(attempts, vec!["1", "2"]);
    // A receiver that is down at the end gets it once it is up.
    let failed = hook(down_port, "select nope from dates");
    std::thread::sleep(Duration::from_millis(1500));
    let late = Receiver::start_on(down_port, vec![]);
    let (headers, body) = late.wait_for(1, Duration::from_secs(20)).remove(0);
    verify(&headers, &body);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (&v["data"]["queryID"], &v["data"]["status"]),
        (&json!(failed), &json!("FAILED")),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        up.got.lock().expect("lock").len(),
        2,
        "an acknowledged webhook is not sent again"
    );

    // Only to allowed hosts, and only when the server allows webhooks at all.
    let elsewhere = json!({"sql": "select 1", "project": "ssb", "callback_url": "http://169.254.169.254/latest"});
    let (status, v) = server.json(
        "POST",
        "/kylin/api/async_query",
        Some(&elsewhere.to_string()),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["msg"].as_str().expect("msg").contains("callback_allow"),
        "{v}"
    );
}

#[test]
fn a_webhook_outlives_a_crash_and_webhooks_are_off_unless_configured() {
    let port = free_port();
    let server = Server::start(&format!(
        "{CONFIG}callback_secret = \"{SECRET}\"\ncallback_allow = [\"127.0.0.1:{port}\"]\n"
    ));
    let body = json!({"sql": "select count(*) from dates", "project": "ssb",
                      "callback_url": format!("http://127.0.0.1:{port}/x"), "wait_timeout": 30});
    let id = submit_body(&server, &body)["data"]["queryID"]
        .as_str()
        .expect("id")
        .to_owned();
    // Its first attempt has met a closed port; the server dies before it is delivered.
    std::thread::sleep(Duration::from_millis(300));
    let server = server.kill_and_restart();
    let receiver = Receiver::start_on(port, vec![]);
    let (headers, body) = receiver.wait_for(1, Duration::from_secs(30)).remove(0);
    verify(&headers, &body);
    assert!(body.contains(&id), "{body}");
    drop(server);

    // A server without callback_allow takes no webhooks; allowing hosts without a secret
    // stops the start.
    let plain = Server::start(CONFIG);
    let body = json!({"sql": "select 1", "project": "ssb", "callback_url": "http://127.0.0.1:1/x"});
    let (status, v) = plain.json("POST", "/kylin/api/async_query", Some(&body.to_string()));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["msg"].as_str().expect("msg").contains("webhooks are off"),
        "{v}"
    );
    assert!(refused_start("callback_allow = [\"example.com\"]\n").contains("callback_secret"));
}

#[test]
fn revoking_a_grant_hides_the_users_earlier_queries_there() {
    let server = Server::start(CONFIG);
    server.add_user(&["alice", "--project", "ssb"], "wonderland");
    let alice = crate::harness::basic("alice", "wonderland");
    let body = json!({"sql": "select count(*) from dates", "project": "ssb", "wait_timeout": 30})
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let res = server.send("POST", "/kylin/api/async_query", Some(&alice), Some(&body));
        if res.status().as_u16() == 200 {
            let v: Value = res.json().expect("json");
            break v["data"]["queryID"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "alice never got in");
        std::thread::sleep(Duration::from_millis(100));
    };
    let status_as = |who: &str| -> Value {
        server
            .send(
                "GET",
                &format!("/kylin/api/async_query/{id}/status"),
                Some(who),
                None,
            )
            .json()
            .expect("json")
    };
    assert_eq!(status_as(&alice)["data"]["status"], "SUCCESSFUL");
    // Her grant on ssb is revoked: she is re-created with another project only.
    let status = std::process::Command::new(server.binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["user", "remove", "alice"])
        .status()
        .expect("user remove");
    assert!(status.success());
    server.add_user(&["alice", "--project", "DEFAULT"], "wonderland");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = status_as(&alice);
        if v["data"]["status"] == "MISSING" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still visible after the revocation: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(&alice),
        None,
    );
    assert_eq!(res.status().as_u16(), 404, "and so is its result");
    assert_eq!(
        status_as(ADMIN)["data"]["status"],
        "SUCCESSFUL",
        "an admin still sees it"
    );
}

#[test]
fn head_on_a_download_answers_its_headers_without_reading_the_result() {
    let server = Server::start(CONFIG);
    let id = server.submit("select * from p_lineorder", "ssb");
    server.wait(&id);
    let bytes = server.result(&id);
    let path = format!("/kylin/api/async_query/{id}/result");
    let res = server.send("HEAD", &path, Some(ADMIN), None);
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert!(res.headers().contains_key("etag") && res.headers().contains_key("repr-digest"));
    // Without the file the headers still come (from the job record); a GET needs the file.
    for entry in std::fs::read_dir(server.data_dir.join("results"))
        .expect("results")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&id) {
            std::fs::remove_file(entry.path()).expect("remove");
        }
    }
    let res = server.send("HEAD", &path, Some(ADMIN), None);
    assert_eq!(res.status().as_u16(), 200, "HEAD read nothing");
    let res = server.http_get(
        &format!("/kylin/api/async_query/{id}/result"),
        &[("Range", "bytes=0-9")],
    );
    assert_eq!(res.status().as_u16(), 500, "a GET did need the file");
    let res = server.send("HEAD", &path, None, None);
    assert_eq!(res.status().as_u16(), 401, "HEAD is authenticated like GET");
}
