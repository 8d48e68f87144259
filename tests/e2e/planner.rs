//! Spool's own SQL front end (`sql_front_end = "spool"`) through the real server: answers with
//! Kylin's semantics where Polars' SQL context answered wrong, and Kylin's labels in metadata.

use crate::harness::Server;

#[test]
fn the_planner_front_end_answers_through_the_async_api_with_kylins_labels() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\nsql_front_end = \"spool\"\n");
    let count = server.run("select count(*) from dates", "ssb");
    // Tableau's "number of records": SUM(1) counts rows (Polars' SQL context answered 1).
    assert_eq!(server.run("select sum(1) from dates", "ssb"), count);
    // Kylin's integer division, and a decimal literal's exact arithmetic.
    assert_eq!(
        server.run("select 7 / 2, 1.10 * 3 from dates limit 1", "ssb"),
        "3,3.30\n"
    );
    // A schema-qualified, quoted name.
    assert_eq!(
        server.run(r#"select count(*) from "SSB"."DATES""#, "ssb"),
        count
    );
    let id = server.submit(
        "select count(*) as cnt, d_year from dates group by d_year",
        "ssb",
    );
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let (status, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/metadata"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0], serde_json::json!(["CNT", "D_YEAR"]), "{v}");
    // Timestamps as Kylin prints them (Kylin's Python client parses this), in the CSV and in
    // the synchronous call's results.
    let sql = "select timestamp '1994-06-01 12:34:56.100', timestamp '1994-06-01 00:00:00', \
               date '1994-06-01' from dates limit 1";
    assert_eq!(
        server.run(sql, "ssb"),
        "1994-06-01 12:34:56.1,1994-06-01 00:00:00,1994-06-01\n"
    );
    let (status, v) = server.json(
        "POST",
        "/kylin/api/query",
        Some(&serde_json::json!({"sql": sql, "project": "ssb"}).to_string()),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["results"][0],
        serde_json::json!(["1994-06-01 12:34:56.1", "1994-06-01 00:00:00", "1994-06-01"]),
        "{v}"
    );
    // An error says where.
    let id = server.submit("select nope\nfrom dates", "ssb");
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED", "{v}");
    assert_eq!(v["data"]["error_code"], "SPOOL-QUERY-INVALID", "{v}");
    assert_eq!(
        v["data"]["info"], "column 'nope' not found (line 1, column 8)",
        "{v}"
    );
}
