//! Queries run in worker processes: a query over its memory budget, or whose engine process
//! is killed, ends FAILED alone, with a reason; the server and the queries beside it go on.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, children};

/// Far more memory than 256 MiB: a sorted cross join of the fact table with itself (60,192²
/// rows at SF 0.01).
const HUNGRY: &str = "select a.lo_orderkey, b.lo_revenue from p_lineorder a \
                      cross join p_lineorder b order by b.lo_revenue";

/// A query that streams rows for as long as it is let run (about 150 million rows).
const ENDLESS: &str = "select * from p_lineorder cross join dates";

/// A neighbour's query: the whole fact table, sorted, so it runs for a while.
const NEIGHBOUR: &str = "select * from p_lineorder order by lo_orderkey, lo_linenumber";

/// A small query whose answer is known once it has run.
const COUNT: &str = "select count(*) from p_lineorder";

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_until(what: &str, server: &Server, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn field<'a>(status: &'a Value, name: &str) -> &'a Value {
    &status["data"][name]
}

#[test]
fn a_query_over_its_memory_budget_fails_alone_and_the_server_and_its_neighbours_go_on() {
    let server = Server::start("workers = 2\nsample_sf = 0.01\nmax_query_memory = \"256MiB\"\n");
    let pid = server.pid();
    // The reference bytes of the neighbour's query, from a run on its own.
    let expected = server.run(NEIGHBOUR, "ssb").into_bytes();
    let count = server.run(COUNT, "ssb");

    let neighbour = server.submit(NEIGHBOUR, "ssb");
    let hungry = server.submit(HUNGRY, "ssb");
    let failed = server.wait(&hungry);
    assert_eq!(field(&failed, "status"), "FAILED", "{failed}");
    assert_eq!(
        field(&failed, "error_code"),
        "SPOOL-OUT-OF-MEMORY",
        "{failed}"
    );
    assert_eq!(field(&failed, "retryable"), false, "{failed}");
    let info = field(&failed, "info").as_str().expect("info");
    assert!(
        info.contains("256 MiB") && info.contains("max_query_memory"),
        "the reason names the budget: {info}"
    );
    assert!(alive(pid), "the server died with the query");

    // The query beside it finished with its whole result, and the server takes more.
    assert_eq!(field(&server.wait(&neighbour), "status"), "SUCCESSFUL");
    assert_eq!(
        server.result(&neighbour),
        expected,
        "the neighbour's result changed"
    );
    assert_eq!(server.run(COUNT, "ssb"), count);

    // Recorded as FAILED once: a restart does not run it into the same wall again.
    let server = server.terminate_and_restart();
    let again = server.status(&hungry);
    assert_eq!(field(&again, "status"), "FAILED", "{again}");
    assert_eq!(field(&again, "attempt"), 1, "{again}");
    eprintln!(
        "figures: memory budget: 256 MiB; the hungry query FAILED SPOOL-OUT-OF-MEMORY, its neighbour SUCCESSFUL with whole bytes, the server kept serving"
    );
}

#[test]
fn a_killed_engine_process_fails_its_query_only_and_the_next_queries_get_fresh_ones() {
    let server = Server::start("workers = 2\nsample_sf = 0.01\nmax_result_bytes = 2000000000\n");
    let pid = server.pid();
    let count = server.run(COUNT, "ssb");
    let endless = server.submit(ENDLESS, "ssb");
    wait_until("the endless query never reported rows", &server, || {
        field(&server.status(&endless), "rows").as_u64() > Some(0)
    });
    // What the kernel's out-of-memory killer, or an operator, does: SIGKILL every worker
    // process, the busy one and the idle ones.
    let workers = children(pid);
    assert!(!workers.is_empty(), "the server runs no worker processes");
    for worker in &workers {
        let status = std::process::Command::new("kill")
            .args(["-9", &worker.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let failed = server.wait(&endless);
    assert_eq!(field(&failed, "status"), "FAILED", "{failed}");
    assert_eq!(
        field(&failed, "error_code"),
        "SPOOL-ENGINE-CRASHED",
        "{failed}"
    );
    let info = field(&failed, "info").as_str().expect("info");
    assert!(
        info.contains("signal 9"),
        "the reason says how it ended: {info}"
    );
    assert!(alive(pid), "the server died with its worker");
    let res = server.http_get(&format!("/kylin/api/async_query/{endless}/result"), &[]);
    assert_ne!(
        res.status().as_u16(),
        200,
        "a crashed query's result was served"
    );

    // The dead idle workers are replaced: the next queries run.
    for _ in 0..3 {
        assert_eq!(server.run(COUNT, "ssb"), count);
    }
    assert!(
        children(pid).iter().all(|child| !workers.contains(child)),
        "a killed worker is still counted as a child"
    );
}
