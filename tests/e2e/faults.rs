//! Faults that must end in a clear answer, through the real server: a result store whose disk
//! fills up. The file system is a small ext4 image mounted over the data dir's `results/`
//! (loop devices need root; CI runs as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{ADMIN, Server};

/// A loop-mounted ext4 file system, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(image: &Path, at: &Path, megabytes: u64) -> Self {
        let root = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&root.stdout).trim(),
            "0",
            "this test mounts a small ext4 file system and needs root: run it as root (CI does)"
        );
        let run =
            |program: &str, args: &[&str]| {
                let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
                panic!("{program} is needed to build the small disk (e2fsprogs, util-linux): {e}")
            });
                assert!(
                    out.status.success(),
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
        let image_s = image.to_str().expect("utf-8");
        run("truncate", &["-s", &format!("{megabytes}M"), image_s]);
        // No blocks reserved for root: the test runs as root and must see the disk fill.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", image_s]);
        std::fs::create_dir_all(at).expect("mount point");
        run(
            "mount",
            &["-o", "loop", image_s, at.to_str().expect("utf-8")],
        );
        Self {
            mount: at.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn a_result_that_does_not_fit_fails_saying_the_disk_is_full_and_the_server_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let results = data.join("results");
    let disk = SmallDisk::mount(&tmp.path().join("results.img"), &results, 40);
    let config = tmp.path().join("spool.toml");
    std::fs::write(&config, "workers = 1\nsample_sf = 0.02\n").expect("config");
    let server = Server::start_on(&data, &config);

    // A small result that fits, stored before the disk fills.
    let kept = server.submit(
        "select d_year, count(*) from dates group by d_year order by d_year",
        "ssb",
    );
    assert_eq!(server.wait(&kept)["data"]["status"], "SUCCESSFUL");
    let kept_bytes = server.result(&kept);

    // Something else takes the disk's space.
    let filler = disk.mount.join("filler");
    let free = 40 * 1024 * 1024 - 4 * 1024 * 1024;
    std::fs::write(&filler, vec![7u8; free]).ok();
    let sql = "select * from p_lineorder order by lo_orderkey, lo_linenumber limit 60000";
    let id = server.submit(sql, "ssb");
    let status = server.wait(&id);
    assert_eq!(status["data"]["status"], "FAILED", "{status}");
    assert_eq!(status["data"]["error_code"], "SPOOL-DISK-FULL", "{status}");
    assert_eq!(status["data"]["retryable"], true);
    let info = status["data"]["info"].as_str().expect("info");
    assert!(
        info.contains("out of space (disk full)")
            && info.contains(" rows and ")
            && info.contains("removed"),
        "{info}"
    );
    // Its partial file is gone; the stored result and the server are as they were.
    let tmp_files: Vec<_> = std::fs::read_dir(results.join(".tmp"))
        .expect("tmp dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp_files.is_empty(), "partial files left: {tmp_files:?}");
    assert_eq!(server.result(&kept), kept_bytes);
    let health = server.send("GET", "/healthz", None, None);
    assert_eq!(health.status().as_u16(), 200);

    // Space returns: the same query succeeds, with no restart.
    std::fs::remove_file(&filler).expect("remove filler");
    std::thread::sleep(Duration::from_millis(50));
    let again = server.submit(sql, "ssb");
    let status = server.wait(&again);
    assert_eq!(status["data"]["status"], "SUCCESSFUL", "{status}");
    let rows = String::from_utf8(server.result(&again))
        .expect("utf-8")
        .lines()
        .count();
    assert_eq!(rows, 60_000);
    drop(server);
    drop(disk);
}

#[test]
fn a_submit_the_job_store_cannot_write_answers_503_stores_nothing_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // The whole data dir, job store included, on a small disk.
    let disk = SmallDisk::mount(&tmp.path().join("data.img"), &data, 48);
    let config = tmp.path().join("spool.toml");
    let settings = "workers = 1\nsample_sf = 0.01\nmax_in_flight_per_user = 0\n";
    std::fs::write(&config, settings).expect("config");
    let server = Server::start_on(&data, &config);
    let count = "select count(*) from p_lineorder";
    let kept = server.submit(count, "ssb");
    assert_eq!(server.wait(&kept)["data"]["status"], "SUCCESSFUL");
    let kept_bytes = server.result(&kept);
    let listed = |server: &Server| {
        let (status, v) = server.json("GET", "/kylin/api/async_query?limit=1000", None);
        assert_eq!(status, 200, "{v}; log:\n{}", server.log());
        v["data"]["queries"].as_array().map_or(0, Vec::len)
    };
    let before = listed(&server);

    // Something else takes every block left.
    let filler = disk.mount.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![7u8; 1 << 20];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        let small = [7u8; 4096];
        while file
            .write_all(&small)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
    }
    // Submit until the job store takes no more (it keeps a reserve for the queries it runs,
    // so it refuses at once here), then a few more.
    let body = serde_json::json!({ "sql": count, "project": "ssb" }).to_string();
    let submit = || {
        let res = server.send("POST", "/kylin/api/async_query", Some(ADMIN), Some(&body));
        let status = res.status().as_u16();
        let retry_after = res.headers().get("retry-after").is_some();
        let v: serde_json::Value = res.json().expect("json");
        (status, retry_after, v)
    };
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..3000 {
        let (status, retry_after, v) = submit();
        if status == 200 && refused == 0 {
            accepted.push(v["data"]["queryID"].as_str().expect("id").to_owned());
            continue;
        }
        assert_eq!(status, 503, "a submit on a full disk: {v}");
        assert_eq!(v["error_code"], "SPOOL-DISK-FULL", "{v}");
        let msg = v["msg"].as_str().expect("msg");
        assert!(
            msg.contains("disk full") && msg.contains("not stored"),
            "{msg}"
        );
        assert!(retry_after, "no Retry-After on a 503");
        refused += 1;
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "3000 submits were stored on a full disk");
    // Nothing was stored half-way, and what was stored is served as it was.
    assert_eq!(
        listed(&server),
        before + accepted.len(),
        "a refused submit left a query behind; log:\n{}",
        server.log()
    );
    assert_eq!(server.result(&kept), kept_bytes);
    let health = server.send("GET", "/healthz", None, None);
    assert_eq!(health.status().as_u16(), 200);

    // Space returns: submits are taken again, with no restart, and every query taken ends.
    std::fs::remove_file(&filler).expect("remove filler");
    let again = server.submit(count, "ssb");
    assert_eq!(server.wait(&again)["data"]["status"], "SUCCESSFUL");
    assert_eq!(server.result(&again), kept_bytes);
    for id in &accepted {
        let status = server.wait(id);
        assert_ne!(status["data"]["status"], "MISSING", "{status}");
    }
    assert_eq!(listed(&server), before + accepted.len() + 1);
    // And what the store holds survives a restart.
    let server = server.terminate_and_restart();
    assert_eq!(server.result(&kept), kept_bytes);
    assert_eq!(server.result(&again), kept_bytes);
    eprintln!(
        "figures: job store disk full: {} submits stored until the disk was full, then {refused} refused with 503 SPOOL-DISK-FULL and none stored; recovered without a restart",
        accepted.len()
    );
    drop(server);
    drop(disk);
}

/// Rounds of the crash loop: each lets the server work a moment, then kills it.
const ROUNDS: usize = 30;

#[test]
fn a_crash_loop_loses_no_acknowledged_query_and_never_serves_a_partial_result() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let mut server = Server::start("workers = 2\nsample_sf = 0.01\n");
    // Each query's bytes from an uninterrupted run: the reference every recovered one must equal.
    let queries: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "select lo_orderkey, lo_linenumber, lo_revenue from lineorder \
                 where lo_orderkey % 4 = {i} order by lo_orderkey, lo_linenumber"
            )
        })
        .chain(["select * from p_lineorder order by lo_orderkey, lo_linenumber".to_owned()])
        .collect();
    let expected: Vec<Vec<u8>> = queries
        .iter()
        .map(|sql| {
            let id = server.submit(sql, "ssb");
            assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
            server.result(&id)
        })
        .collect();
    assert!(expected[4].len() > 1_000_000, "the export takes a while");

    // A client submitting all the time, through whichever process is up; a submission counts
    // once it was answered 200.
    let base = Arc::new(Mutex::new(server.base.clone()));
    let acknowledged: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (base, acknowledged, stop, queries) = (
            Arc::clone(&base),
            Arc::clone(&acknowledged),
            Arc::clone(&stop),
            queries.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let which = n % queries.len();
                n += 1;
                let url = format!("{}/kylin/api/async_query", base.lock().expect("base"));
                let answer = http
                    .post(url)
                    .header("Authorization", crate::harness::ADMIN)
                    .header("Content-Type", "application/json")
                    .body(serde_json::json!({"sql": queries[which], "project": "ssb"}).to_string())
                    .send();
                if let Ok(res) = answer
                    && res.status().as_u16() == 200
                    && let Ok(v) = res.json::<serde_json::Value>()
                    && let Some(id) = v["data"]["queryID"].as_str()
                {
                    acknowledged
                        .lock()
                        .expect("ids")
                        .push((id.to_owned(), which));
                }
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut served = 0usize;
    for round in 0..ROUNDS {
        let until = std::time::Instant::now() + Duration::from_millis(600 + next() % 500);
        while std::time::Instant::now() < until {
            // Whatever a download serves is a whole result: a running query's is never served.
            let sample: Vec<(String, usize)> = {
                let ids = acknowledged.lock().expect("ids");
                (0..3)
                    .filter_map(|_| ids.get((next() as usize) % ids.len().max(1)).cloned())
                    .collect()
            };
            for (id, which) in sample {
                let res = server.send(
                    "GET",
                    &format!("/kylin/api/async_query/{id}/result"),
                    Some(crate::harness::ADMIN),
                    None,
                );
                if res.status().as_u16() == 200 {
                    let body = res.bytes().expect("body");
                    assert!(
                        body[..] == expected[which][..],
                        "query {id} served a partial result"
                    );
                    served += 1;
                } else {
                    assert_eq!(res.status().as_u16(), 409, "query {id}");
                }
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        server = if round % 3 == 2 {
            server.terminate_and_restart()
        } else {
            server.kill_and_restart()
        };
        *base.lock().expect("base") = server.base.clone();
    }
    stop.store(true, Ordering::Relaxed);
    submitter.join().expect("submitter");

    let acknowledged = acknowledged.lock().expect("ids").clone();
    assert!(
        acknowledged.len() >= 2 * ROUNDS,
        "{} submissions",
        acknowledged.len()
    );
    for (id, which) in &acknowledged {
        let status = server.wait(id);
        assert_eq!(
            status["data"]["status"], "SUCCESSFUL",
            "query {id}: {status}"
        );
        assert!(
            server.result(id) == expected[*which],
            "query {id} has other rows than an uninterrupted run"
        );
    }
    eprintln!(
        "figures: crash loop: {ROUNDS} rounds ({} kill -9, {} SIGTERM), {} acknowledged queries, \
         0 lost, {served} downloads during the loop, all whole",
        ROUNDS - ROUNDS / 3,
        ROUNDS / 3,
        acknowledged.len()
    );
}

/// A graceful shutdown gives a running query's claim back: that is not the query's fault, so
/// however many shutdowns stop it, it never runs out of attempts (only crashes count towards
/// SPOOL-QUERY-INTERRUPTED, after 5).
#[cfg(unix)]
#[test]
fn a_query_stopped_by_more_graceful_shutdowns_than_its_attempts_still_succeeds() {
    const SHUTDOWNS: usize = 7;
    let mut server = Server::start("workers = 1\nsample_sf = 0.01\n");
    // Long enough to be caught running each time, also on a fast machine: progress (the rows
    // looked for below) is recorded once a second, and 5 million rows once took 0.54 s in all.
    // About 44 million rows (700 MB of CSV), and its rows counted.
    let sql = "select lo_orderkey, lo_linenumber, d_datekey from lineorder cross join dates \
               where d_datekey < 19940101";
    let count = server.submit(&format!("select count(*) as n from ({sql}) t"), "ssb");
    assert_eq!(server.wait(&count)["data"]["status"], "SUCCESSFUL");
    let text = String::from_utf8(server.result(&count)).expect("utf-8");
    let rows: u64 = text
        .trim()
        .parse()
        .ok()
        .unwrap_or_else(|| panic!("a count: {text}"));

    let id = server.submit(sql, "ssb");
    for shutdown in 0..SHUTDOWNS {
        // Running in the engine: rows are coming out.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = server.status(&id);
            assert_eq!(
                v["data"]["status"], "RUNNING",
                "shutdown {shutdown}: the query ended before it was stopped: {v}"
            );
            if v["data"]["rows"].as_u64().is_some_and(|r| r > 0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shutdown {shutdown}: the query did not start: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server = server.terminate_and_restart();
    }
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    assert_eq!(v["data"]["rows"], rows, "{v}");
    let result = server.result(&id);
    let lines = result.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, rows, "every row, once");
}
