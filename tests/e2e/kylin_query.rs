//! Kylin's synchronous query API and its metadata calls (what Kylin's drivers and BI tools
//! call), and the listing of a user's queries, through the real server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ADMIN, Server, basic};

const V4: &str = "application/vnd.apache.kylin-v4-public+json";
const SMALL: &str = "workers = 2\nsample_sf = 0.002\n";

/// Kylin 4's `SQLResponse` as Jackson writes it (its getters, `server-base`'s
/// `org.apache.kylin.rest.response.SQLResponse`): every field a Kylin client may read.
const SQL_RESPONSE: [&str; 22] = [
    "columnMetas",
    "results",
    "cube",
    "cuboidIds",
    "realizationTypes",
    "affectedRowCount",
    "isException",
    "sparkPool",
    "exceptionMessage",
    "duration",
    "partial",
    "pushDown",
    "totalScanCount",
    "totalScanBytes",
    "totalScanFiles",
    "metadataTime",
    "totalSparkScanTime",
    "hitExceptionCache",
    "storageCacheUsed",
    "traceUrl",
    "traces",
    "queryId",
];

/// Kylin's `SelectedColumnMeta` as Jackson writes it.
const COLUMN_META: [&str; 19] = [
    "autoIncrement",
    "caseSensitive",
    "searchable",
    "currency",
    "isNullable",
    "signed",
    "displaySize",
    "label",
    "name",
    "schemaName",
    "catelogName",
    "tableName",
    "precision",
    "scale",
    "columnType",
    "columnTypeName",
    "readOnly",
    "writable",
    "definitelyWritable",
];

/// Kylin's `ColumnMeta` (JDBC's `getColumns` row) as Jackson writes it.
const TABLE_COLUMN_META: [&str; 23] = [
    "table_CAT",
    "table_SCHEM",
    "table_NAME",
    "column_NAME",
    "data_TYPE",
    "type_NAME",
    "column_SIZE",
    "buffer_LENGTH",
    "decimal_DIGITS",
    "num_PREC_RADIX",
    "nullable",
    "remarks",
    "column_DEF",
    "sql_DATA_TYPE",
    "sql_DATETIME_SUB",
    "char_OCTET_LENGTH",
    "ordinal_POSITION",
    "is_NULLABLE",
    "scope_CATLOG",
    "scope_SCHEMA",
    "scope_TABLE",
    "source_DATA_TYPE",
    "is_AUTOINCREMENT",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn has_all(v: &Value, fields: &[&str]) {
    let got = keys(v);
    for f in fields {
        assert!(got.contains(*f), "field {f} missing from {v}");
    }
}

/// Sends `request` as `auth` with an optional Accept header; the status and the JSON body.
fn call(
    request: reqwest::blocking::RequestBuilder,
    auth: &str,
    accept: Option<&str>,
) -> (u16, Value) {
    let mut request = request.header("Authorization", auth);
    if let Some(a) = accept {
        request = request.header("Accept", a);
    }
    let res = request.send().expect("request");
    let status = res.status().as_u16();
    let text = res.text().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// POSTs a sync query as `auth` with an optional Accept header; status and JSON body.
fn sync(server: &Server, auth: &str, accept: Option<&str>, body: &Value) -> (u16, Value) {
    let request = reqwest::blocking::Client::new()
        .post(server.url("/kylin/api/query"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    call(request, auth, accept)
}

fn get_as(server: &Server, auth: &str, path: &str, accept: Option<&str>) -> (u16, Value) {
    call(
        reqwest::blocking::Client::new().get(server.url(path)),
        auth,
        accept,
    )
}

/// The CSV the async API gives for `sql`, as rows of fields (no quoting in these queries).
fn async_rows(server: &Server, sql: &str) -> Vec<Vec<String>> {
    server
        .run(sql, "ssb")
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn rows_of(v: &Value) -> Vec<Vec<String>> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|f| f.as_str().expect("strings").to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn sync_queries_answer_in_kylins_shapes_with_the_async_apis_rows() {
    let server = Server::start(SMALL);
    let sql = "select lo_orderkey, lo_shipmode, lo_revenue, lo_orderdate \
               from lineorder order by lo_orderkey, lo_linenumber limit 25";
    let expected = async_rows(&server, sql);
    assert_eq!(expected.len(), 25);

    // Kylin 4: the SQLResponse itself.
    let (status, v) = sync(&server, ADMIN, None, &json!({"sql": sql, "project": "ssb"}));
    assert_eq!(status, 200, "{v}");
    has_all(&v, &SQL_RESPONSE);
    assert_eq!(v["isException"], false);
    assert_eq!(v["partial"], false);
    assert_eq!(rows_of(&v), expected);
    let metas = v["columnMetas"].as_array().expect("columnMetas");
    for meta in metas {
        has_all(meta, &COLUMN_META);
        assert_eq!(meta["schemaName"], "SSB");
    }
    let described: Vec<(String, String, i64)> = metas
        .iter()
        .map(|m| {
            (
                m["label"].as_str().expect("label").to_owned(),
                m["columnTypeName"].as_str().expect("type").to_owned(),
                m["columnType"].as_i64().expect("code"),
            )
        })
        .collect();
    assert_eq!(described[0], ("LO_ORDERKEY".into(), "BIGINT".into(), -5));
    assert_eq!(described[1].1, "VARCHAR");
    assert_eq!(described[1].2, 12);
    assert_eq!(described.len(), 4);

    // The query ran as a job like any other: listed, with its result downloadable.
    let id = v["queryId"].as_str().expect("queryId").to_owned();
    assert_eq!(server.status(&id)["data"]["status"], "SUCCESSFUL");

    // Kylin 5: the same inside the envelope.
    let (status, v5) = sync(
        &server,
        ADMIN,
        Some(V4),
        &json!({"sql": sql, "project": "ssb"}),
    );
    assert_eq!(status, 200, "{v5}");
    assert_eq!((&v5["code"], &v5["msg"]), (&json!("000"), &json!("")));
    has_all(&v5["data"], &SQL_RESPONSE);
    assert_eq!(rows_of(&v5["data"]), expected);

    // NULL stays null, an empty string stays "".
    let (_, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": "select lo_orderkey, case when lo_linenumber = 1 then null else '' end as maybe \
                        from lineorder order by lo_orderkey, lo_linenumber limit 2",
                "project": "ssb"}),
    );
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows[0][1], Value::Null, "{v}");
    assert_eq!(rows[1][1], json!(""), "{v}");

    // offset and limit page the answer, as on the async API (where the SQL has no limit).
    let (_, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": "select lo_orderkey, lo_shipmode, lo_revenue, lo_orderdate from lineorder \
                        order by lo_orderkey, lo_linenumber",
                "project": "ssb", "offset": 20, "limit": 3, "acceptPartial": true}),
    );
    let paged = async_rows(
        &server,
        "select lo_orderkey, lo_shipmode, lo_revenue, lo_orderdate from lineorder \
         order by lo_orderkey, lo_linenumber limit 3 offset 20",
    );
    assert_eq!(rows_of(&v), paged);
}

#[test]
fn sync_queries_cut_at_the_row_cap_and_fail_in_kylins_error_shapes() {
    let server = Server::start("workers = 1\nsample_sf = 0.002\nsync_query_max_rows = 5\n");
    let sql = "select lo_orderkey from lineorder order by lo_orderkey, lo_linenumber";
    let (status, v) = sync(&server, ADMIN, None, &json!({"sql": sql, "project": "ssb"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["partial"], true);
    assert_eq!(rows_of(&v).len(), 5);
    let (_, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": sql, "project": "ssb", "limit": 4}),
    );
    assert_eq!((rows_of(&v).len(), &v["partial"]), (4, &json!(false)));
    let (_, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": format!("{sql} limit 5"), "project": "ssb"}),
    );
    assert_eq!(
        (rows_of(&v).len(), &v["partial"]),
        (5, &json!(false)),
        "exactly the cap is not partial"
    );

    // A query error: Kylin 4 answers with its ErrorResponse and an error status; Kylin 5 with
    // isException inside a successful envelope.
    let bad = json!({"sql": "select no_such_column from lineorder", "project": "ssb"});
    let (status, v) = sync(&server, ADMIN, None, &bad);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "999");
    assert_eq!(v["url"], "/kylin/api/query");
    let msg = v["msg"].as_str().expect("msg");
    assert!(msg.contains("no_such_column"), "{v}");
    assert_eq!(v["exception"], v["msg"]);
    assert_eq!(v["error_code"], "SPOOL-QUERY-INVALID");
    let (status, v) = sync(&server, ADMIN, Some(V4), &bad);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["isException"], true);
    assert!(
        v["data"]["exceptionMessage"]
            .as_str()
            .expect("message")
            .contains("no_such_column"),
        "{v}"
    );
    let (status, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": "select 1", "project": "nope"}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["msg"].as_str().expect("msg").contains("nope"), "{v}");

    // Malformed calls get the envelope before anything runs; the sandbox holds.
    for (body, fragment) in [
        (json!({"project": "ssb"}), "field 'sql' is required"),
        (json!({"sql": "select 1", "limit": "x"}), "field 'limit'"),
        (
            json!({"sql": "select 1", "acceptPartial": 3}),
            "acceptPartial",
        ),
    ] {
        let (status, v) = sync(&server, ADMIN, None, &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["msg"].as_str().expect("msg").contains(fragment), "{v}");
    }
    let (status, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": "select * from read_csv('/etc/passwd')", "project": "ssb"}),
    );
    assert_eq!(status, 400, "{v}");
    let res = reqwest::blocking::Client::new()
        .post(server.url("/kylin/api/query"))
        .body(json!({"sql": "select 1"}).to_string())
        .send()
        .expect("request");
    assert_eq!(res.status().as_u16(), 401);
}

#[test]
fn a_sync_query_that_outlives_its_wait_is_stopped_with_a_clear_error() {
    let server = Server::start("workers = 1\nsample_sf = 0.07\nsync_query_timeout_secs = 1\n");
    // The one worker is busy with exports, so the synchronous query waits in the queue.
    let busy: Vec<String> = (0..3)
        .map(|_| {
            let body = json!({"sql": "select * from p_lineorder order by lo_orderkey, lo_linenumber",
                              "project": "ssb", "format": "json"});
            let (status, v) = server.json("POST", "/kylin/api/async_query", Some(&body.to_string()));
            assert_eq!(status, 200, "{v}");
            v["data"]["queryID"].as_str().expect("id").to_owned()
        })
        .collect();
    let started = Instant::now();
    let (status, v) = sync(
        &server,
        ADMIN,
        None,
        &json!({"sql": "select 1", "project": "ssb"}),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error_code"], "SPOOL-QUERY-TIMEOUT");
    let msg = v["msg"].as_str().expect("msg");
    assert!(msg.contains("did not finish within 1 s"), "{msg}");
    // The abandoned query was stopped, not left to hold a worker.
    let id = msg.split_whitespace().nth(1).expect("id").to_owned();
    let status = server.wait(&id);
    assert_eq!(status["data"]["state"], "CANCELLED", "{status}");
    for id in busy {
        server.send(
            "DELETE",
            &format!("/kylin/api/async_query/stop/{id}"),
            Some(ADMIN),
            None,
        );
    }
}

#[test]
fn projects_tables_and_the_login_check_speak_kylins_metadata_api() {
    let server = Server::start(SMALL);
    server.add_user(&["alice", "--project", "ssb"], "wonderland");
    let alice = basic("alice", "wonderland");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_as(&server, &alice, "/kylin/api/user/authentication", None).0 != 200 {
        assert!(Instant::now() < deadline, "alice never got in");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Projects: what the caller may query.
    let (status, v) = get_as(&server, ADMIN, "/kylin/api/projects", None);
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["DEFAULT", "ssb"]);
    let (_, v) = get_as(&server, &alice, "/kylin/api/projects", None);
    assert_eq!(v.as_array().expect("list").len(), 1);
    assert_eq!(v[0]["name"], "ssb");
    let (_, v) = get_as(&server, ADMIN, "/kylin/api/projects?page_size=1", Some(V4));
    assert_eq!(v["code"], "000");
    assert_eq!(v["data"]["total_size"], 2);
    assert_eq!(v["data"]["value"].as_array().expect("value").len(), 1);
    let (status, _) = get_as(&server, ADMIN, "/kylin/api/projects?limit=x", None);
    assert_eq!(status, 400);

    // Tables and columns, at Kylin 4's path and Kylin 5's.
    let (status, v) = get_as(
        &server,
        &alice,
        "/kylin/api/tables_and_columns?project=ssb",
        None,
    );
    assert_eq!(status, 200, "{v}");
    let tables = v.as_array().expect("a list");
    let find = |name: &str| {
        tables
            .iter()
            .find(|t| {
                t["table_NAME"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .unwrap_or_else(|| panic!("no table {name} in {v}"))
    };
    let lineorder = find("lineorder");
    assert_eq!(lineorder["table_SCHEM"], "SSB");
    assert_eq!(lineorder["table_TYPE"], "TABLE");
    let columns = lineorder["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), 17);
    for c in columns {
        has_all(c, &TABLE_COLUMN_META);
    }
    assert_eq!(columns[0]["column_NAME"], "LO_ORDERKEY");
    assert_eq!(columns[0]["ordinal_POSITION"], 1);
    assert_eq!(columns[0]["type_NAME"], "BIGINT");
    assert_eq!(columns[0]["data_TYPE"], -5);
    let view = find("p_lineorder");
    assert_eq!(view["table_TYPE"], "VIEW");
    let view_columns: Vec<&str> = view["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["column_NAME"].as_str().expect("name"))
        .collect();
    assert_eq!(view_columns.len(), 18);
    assert_eq!(view_columns[17], "V_REVENUE");
    let (status, v5) = get_as(
        &server,
        &alice,
        "/kylin/api/query/tables_and_columns?project=ssb",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(v5["code"], "000");
    assert_eq!(
        v5["data"].as_array().expect("list").len(),
        tables.len(),
        "both paths describe the same tables"
    );
    for (path, who, code) in [
        (
            "/kylin/api/tables_and_columns?project=DEFAULT",
            alice.as_str(),
            403,
        ),
        ("/kylin/api/tables_and_columns", ADMIN, 400),
        ("/kylin/api/tables_and_columns?project=nope", ADMIN, 404),
        ("/kylin/api/tables_and_columns?project=..", ADMIN, 400),
    ] {
        let (status, v) = get_as(&server, who, path, None);
        assert_eq!(status, code, "{path}: {v}");
        assert_eq!(v["code"], "999", "{v}");
    }

    // The login check: who the credentials are, with Kylin's authorities.
    for method in ["GET", "POST"] {
        let res = server.send(method, "/kylin/api/user/authentication", Some(&alice), None);
        assert_eq!(res.status().as_u16(), 200);
        let v: Value = res.json().expect("json");
        assert_eq!(v["userDetails"]["username"], "alice");
        let authorities: Vec<&str> = v["userDetails"]["authorities"]
            .as_array()
            .expect("authorities")
            .iter()
            .map(|a| a["authority"].as_str().expect("authority"))
            .collect();
        assert!(authorities.contains(&"ROLE_ANALYST"), "{v}");
        assert!(!authorities.contains(&"ROLE_ADMIN"), "{v}");
    }
    let (_, v) = get_as(&server, ADMIN, "/kylin/api/user/authentication", Some(V4));
    assert_eq!(v["code"], "000");
    assert_eq!(v["data"]["username"], "ADMIN");
    assert!(v["data"]["authorities"].to_string().contains("ROLE_ADMIN"));
    let res = server.send(
        "POST",
        "/kylin/api/user/authentication",
        Some(&basic("alice", "wrong")),
        None,
    );
    assert_eq!(res.status().as_u16(), 401);
    for path in [
        "/kylin/api/projects",
        "/kylin/api/tables_and_columns?project=ssb",
    ] {
        let res = server.send("GET", path, None, None);
        assert_eq!(res.status().as_u16(), 401, "{path}");
    }
}

#[test]
fn the_listing_shows_a_users_own_queries_newest_first_a_page_at_a_time() {
    let server = Server::start(SMALL);
    server.add_user(&["alice", "--project", "ssb"], "wonderland");
    let alice = basic("alice", "wonderland");
    let submit_as = |auth: &str, sql: &str, project: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let res = server.send(
                "POST",
                "/kylin/api/async_query",
                Some(auth),
                Some(&json!({"sql": sql, "project": project}).to_string()),
            );
            if res.status().as_u16() == 200 {
                let v: Value = res.json().expect("json");
                return v["data"]["queryID"].as_str().expect("id").to_owned();
            }
            assert!(Instant::now() < deadline, "{}", res.status());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mine: Vec<String> = (0..3)
        .map(|i| submit_as(&alice, &format!("select {i} as n"), "ssb"))
        .collect();
    let bad = submit_as(&alice, "select nope from lineorder", "ssb");
    let admins = submit_as(ADMIN, "select 9 as n", "DEFAULT");
    for id in mine.iter().chain([&bad, &admins]) {
        server.wait(id);
    }
    let list = |auth: &str, query: &str| -> (u16, Value) {
        get_as(
            &server,
            auth,
            &format!("/kylin/api/async_query{query}"),
            None,
        )
    };
    let ids = |v: &Value| -> Vec<String> {
        v["data"]["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .map(|q| q["queryID"].as_str().expect("queryID").to_owned())
            .collect()
    };

    let (status, v) = list(&alice, "");
    assert_eq!(status, 200, "{v}");
    let newest_first = vec![
        bad.clone(),
        mine[2].clone(),
        mine[1].clone(),
        mine[0].clone(),
    ];
    assert_eq!(ids(&v), newest_first, "hers only, newest first");
    assert_eq!(v["data"]["next_before"], Value::Null);
    let first = &v["data"]["queries"][1];
    assert_eq!(first["status"], "SUCCESSFUL");
    assert_eq!(first["project"], "ssb");
    assert_eq!(first["owner"], "alice");
    assert_eq!(first["sql"], "select 2 as n");

    // Pages.
    let (_, page1) = list(&alice, "?limit=3");
    assert_eq!(ids(&page1), newest_first[..3]);
    let next = page1["data"]["next_before"].as_str().expect("a next page");
    let (_, page2) = list(&alice, &format!("?limit=3&before={next}"));
    assert_eq!(ids(&page2), newest_first[3..]);
    assert_eq!(page2["data"]["next_before"], Value::Null);

    // Filters, and the admin's view.
    let (_, v) = list(&alice, "?state=failed");
    assert_eq!(ids(&v), vec![bad.clone()]);
    let (_, v) = list(&alice, "?state=SUCCESSFUL&project=ssb");
    assert_eq!(ids(&v), newest_first[1..]);
    let (_, v) = list(ADMIN, "");
    assert_eq!(ids(&v)[0], admins);
    assert_eq!(ids(&v).len(), 5);
    let (_, v) = list(ADMIN, "?project=default");
    assert_eq!(ids(&v), vec![admins.clone()]);
    let (_, v) = get_as(&server, ADMIN, "/kylin/api/async_query?limit=1", Some(V4));
    assert_eq!(v["data"]["queries"][0]["query_id"], json!(admins));

    // Bad parameters get the envelope; nobody reads another user's page.
    let before_admins = format!("?before={admins}");
    for (auth, query, code) in [
        (alice.as_str(), "?limit=0", 400),
        (alice.as_str(), "?limit=1001", 400),
        (alice.as_str(), "?state=done", 400),
        (alice.as_str(), "?before=nope", 400),
        (alice.as_str(), before_admins.as_str(), 400),
        (alice.as_str(), "?project=DEFAULT", 403),
        (alice.as_str(), "?project=../x", 400),
    ] {
        let (status, v) = list(auth, query);
        assert_eq!(status, code, "{query}: {v}");
        assert_eq!(v["code"], "999");
    }
    let res = server.send("GET", "/kylin/api/async_query", None, None);
    assert_eq!(res.status().as_u16(), 401);
}
