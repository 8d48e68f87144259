//! Spool's own SQL front end through the real server: answers with Kylin's semantics where
//! Polars' SQL context answered wrong, Kylin's labels in metadata, and tables in schemas.

use crate::harness::Server;

#[test]
fn the_planner_front_end_answers_through_the_async_api_with_kylins_labels() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
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

/// A project with a `DEFAULT` schema (named by `project.toml`) and an `EDW.schema/` folder:
/// `tables_and_columns` reports each table's schema, and quoted schema-qualified names resolve
/// through the async API and the synchronous call.
#[test]
fn tables_in_several_schemas_are_listed_and_queried_by_their_schema() {
    let server = Server::start("workers = 2\nsample_sf = 0\n");
    let dir = server.data_dir.join("projects/kylin");
    std::fs::create_dir_all(dir.join("EDW.schema")).expect("mkdir");
    std::fs::write(dir.join("project.toml"), "default_schema = \"DEFAULT\"\n").expect("toml");
    std::fs::write(
        dir.join("TEST_KYLIN_FACT.csv"),
        "CAL_DT,PRICE\n1,10\n2,20\n2,5\n",
    )
    .expect("csv");
    std::fs::write(
        dir.join("EDW.schema/TEST_CAL_DT.csv"),
        "CAL_DT,WEEK_BEG_DT\n1,2012-01-01\n2,2012-01-08\n",
    )
    .expect("csv");

    let (status, v) = server.json(
        "GET",
        "/kylin/api/query/tables_and_columns?project=kylin",
        None,
    );
    assert_eq!(status, 200, "{v}");
    let mut listed: Vec<(String, String)> = v["data"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table_SCHEM"].as_str().unwrap_or_default().to_owned(),
                t["table_NAME"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("DEFAULT".to_owned(), "TEST_KYLIN_FACT".to_owned()),
            ("EDW".to_owned(), "TEST_CAL_DT".to_owned()),
        ],
        "{v}"
    );

    let sql = r#"select c."WEEK_BEG_DT", sum(f.price) as total from "DEFAULT"."TEST_KYLIN_FACT" f join "EDW"."TEST_CAL_DT" c on f.cal_dt = c.cal_dt group by c."WEEK_BEG_DT" order by 1"#;
    assert_eq!(server.run(sql, "kylin"), "2012-01-01,10\n2012-01-08,25\n");
    let (status, v) = server.json(
        "POST",
        "/kylin/api/query",
        Some(&serde_json::json!({"sql": sql, "project": "kylin"}).to_string()),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["results"],
        serde_json::json!([["2012-01-01", "10"], ["2012-01-08", "25"]]),
        "{v}"
    );
    assert_eq!(v["columnMetas"][1]["label"], "TOTAL", "{v}");
    // An unqualified name resolves in the default schema only.
    let id = server.submit("select * from test_cal_dt", "kylin");
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED", "{v}");
    assert_eq!(
        v["data"]["info"], "table 'test_cal_dt' not found in project 'kylin' (line 1, column 15)",
        "{v}"
    );
}
