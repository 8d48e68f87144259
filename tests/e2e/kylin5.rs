//! Kylin 5's async query surface through the real server: formats, encodings, file names,
//! metadata, resumable downloads, delete by id and by age, stop, and the Accept-header shapes.

use std::io::Cursor;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ADMIN, Server, basic};

const V4: &str = "application/vnd.apache.kylin-v4-public+json";

/// Five columns of four types, in a fixed order: the reference every format is checked against.
const SQL: &str = "select lo_orderkey, lo_linenumber, lo_shipmode, lo_revenue, lo_discount \
                   from lineorder order by lo_orderkey, lo_linenumber limit 3000";
const NAMES: [&str; 5] = [
    "LO_ORDERKEY",
    "LO_LINENUMBER",
    "LO_SHIPMODE",
    "LO_REVENUE",
    "LO_DISCOUNT",
];

/// Submits `body` (a JSON object) and returns the query id once it succeeded.
fn run_with(server: &Server, body: Value) -> String {
    let (status, v) = server.json("POST", "/kylin/api/async_query", Some(&body.to_string()));
    assert_eq!(status, 200, "{v}");
    let id = v["data"]["queryID"].as_str().expect("queryID").to_owned();
    let done = server.wait(&id);
    assert_eq!(done["data"]["status"], "SUCCESSFUL", "{done}");
    id
}

fn get(server: &Server, path: &str) -> reqwest::blocking::Response {
    server.send("GET", path, Some(ADMIN), None)
}

fn header(res: &reqwest::blocking::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The reference rows, as text fields, from the seed's CSV.
fn reference(server: &Server) -> Vec<Vec<String>> {
    server
        .run(SQL, "ssb")
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn every_format_comes_back_complete_and_parseable() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let rows = reference(&server);
    assert_eq!(rows.len(), 3000);

    // CSV with a header, a multi-character separator and a Unicode file name.
    let id = run_with(
        &server,
        json!({"sql": SQL, "project": "ssb", "format": "CSV", "separator": "||",
               "include_header": true, "file_name": "订单/export"}),
    );
    let res = get(
        &server,
        &format!("/kylin/api/async_query/{id}/result_download"),
    );
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        header(&res, "content-disposition"),
        "attachment; filename=\"___export.csv\"; filename*=UTF-8''%E8%AE%A2%E5%8D%95_export.csv"
    );
    let text = res.text().expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(NAMES.join("||").as_str()));
    let got: Vec<Vec<String>> = lines
        .map(|l| l.split("||").map(str::to_owned).collect())
        .collect();
    assert_eq!(got, rows);

    // JSON: one array of objects, numbers as numbers.
    let id = run_with(
        &server,
        json!({"sql": SQL, "project": "ssb", "format": "json"}),
    );
    let res = get(
        &server,
        &format!("/kylin/api/async_query/{id}/result_download"),
    );
    assert_eq!(
        header(&res, "content-type"),
        "application/json; charset=utf-8"
    );
    assert!(header(&res, "content-disposition").contains("filename=\"result.json\""));
    let text = res.text().expect("json");
    // Keys come in column order (checked on the text: a parsed map forgets the order).
    let first = &text[..text.find('}').expect("an object")];
    let positions: Vec<usize> = NAMES
        .iter()
        .map(|n| first.find(&format!("\"{n}\":")).expect(n))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{first}");
    let objects: Vec<serde_json::Map<String, Value>> =
        serde_json::from_str(&text).expect("one JSON array");
    assert_eq!(objects.len(), rows.len());
    for (object, row) in objects.iter().zip(&rows) {
        assert_eq!(object.len(), NAMES.len());
        for (name, field) in NAMES.iter().zip(row) {
            let value = match &object[*name] {
                Value::String(s) => s.clone(),
                Value::Number(n) => {
                    assert!(n.is_i64(), "{name} is an integer");
                    n.to_string()
                }
                other => panic!("{name}: {other}"),
            };
            assert_eq!(&value, field, "{name}");
        }
    }

    // Parquet: one valid file with every row.
    let id = run_with(
        &server,
        json!({"sql": SQL, "project": "ssb", "format": "parquet"}),
    );
    let res = get(
        &server,
        &format!("/kylin/api/async_query/{id}/result_download"),
    );
    assert_eq!(
        header(&res, "content-type"),
        "application/vnd.apache.parquet"
    );
    let bytes = res.bytes().expect("parquet");
    use polars::prelude::{ParquetReader, SerReader};
    let frame = ParquetReader::new(Cursor::new(bytes.to_vec()))
        .finish()
        .expect("valid parquet");
    assert_eq!(frame.height(), rows.len());
    assert_eq!(
        frame
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        NAMES
    );
    for (i, row) in rows.iter().enumerate() {
        let got: Vec<String> = frame
            .get_row(i)
            .expect("row")
            .0
            .iter()
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .collect();
        assert_eq!(&got, row, "parquet row {i}");
    }

    // XLSX: a workbook whose sheet holds the header and every row.
    let id = run_with(
        &server,
        json!({"sql": SQL, "project": "ssb", "format": "xlsx", "include_header": true}),
    );
    let res = get(
        &server,
        &format!("/kylin/api/async_query/{id}/result_download"),
    );
    assert_eq!(
        header(&res, "content-type"),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = res.bytes().expect("xlsx");
    let cells = crate::harness::xlsx_cells(&bytes);
    assert_eq!(cells[0], NAMES);
    assert_eq!(&cells[1..], &rows[..]);

    // Metadata, size and path of the last result.
    let (status, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/metadata"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0], json!(NAMES));
    assert_eq!(v["data"][1][2], "VARCHAR");
    assert_eq!(v["data"][1].as_array().expect("types").len(), 5);
    let (_, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/file_status"),
        None,
    );
    assert_eq!(v["data"].as_u64(), Some(bytes.len() as u64));
    let (_, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/result_path?project=ssb"),
        None,
    );
    let path = v["data"].as_str().expect("path");
    assert_eq!(std::fs::read(path).expect("the file").len(), bytes.len());
    let (status, v) = server.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/metadata?project=DEFAULT"),
        None,
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .expect("msg")
            .contains("does not belong to project")
    );

    // Unknown options are refused with the accepted values, and nothing is stored.
    let (status, v) = server.json(
        "POST",
        "/kylin/api/async_query",
        Some(&json!({"sql": SQL, "project": "ssb", "format": "xls"}).to_string()),
    );
    assert_eq!(status, 400);
    assert!(
        v["msg"]
            .as_str()
            .expect("msg")
            .contains("csv, json, xlsx, parquet"),
        "{v}"
    );
    let (status, v) = server.json(
        "POST",
        "/kylin/api/async_query",
        Some(&json!({"sql": SQL, "project": "ssb", "encode": "latin1"}).to_string()),
    );
    assert_eq!(status, 400);
    assert!(
        v["msg"].as_str().expect("msg").contains("utf-8, gbk"),
        "{v}"
    );
}

#[test]
fn gbk_results_are_gbk_bytes_and_unencodable_text_fails_clearly() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let id = run_with(
        &server,
        json!({"sql": "select '中文' as C, 'abc' as D", "project": "ssb", "encode": "GBK",
               "include_header": true}),
    );
    let res = get(&server, &format!("/kylin/api/async_query/{id}/result"));
    assert_eq!(header(&res, "content-type"), "text/csv; charset=gbk");
    // 中 is D6 D0 and 文 is CE C4 in GBK (GB 2312 row 54 and 46).
    assert_eq!(
        res.bytes().expect("body").to_vec(),
        b"C,D\n\xd6\xd0\xce\xc4,abc\n".to_vec()
    );
    let id = run_with(
        &server,
        json!({"sql": "select '中文' as C", "project": "ssb", "encode": "gbk", "format": "json"}),
    );
    let body = get(&server, &format!("/kylin/api/async_query/{id}/result"))
        .bytes()
        .expect("body");
    assert_eq!(body.to_vec(), b"[{\"C\":\"\xd6\xd0\xce\xc4\"}]\n".to_vec());

    let (_, v) = server.json(
        "POST",
        "/kylin/api/async_query",
        Some(
            &json!({"sql": "select 'smile 😀' as c", "project": "ssb", "encode": "gbk"})
                .to_string(),
        ),
    );
    let id = v["data"]["queryID"].as_str().expect("id").to_owned();
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED");
    let info = v["data"]["info"].as_str().expect("info");
    assert!(
        info.contains("GBK cannot encode") && info.contains("U+1F600"),
        "{info}"
    );
}

#[test]
fn a_broken_download_resumes_with_range_and_if_range() {
    let server = Server::start("workers = 2\nsample_sf = 0.01\n");
    let id = run_with(
        &server,
        json!({"sql": "select * from p_lineorder", "project": "ssb"}),
    );
    let path = format!("/kylin/api/async_query/{id}/result_download");
    let whole = get(&server, &path);
    let etag = header(&whole, "etag");
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    let whole = whole.bytes().expect("body").to_vec();
    assert!(whole.len() > 4_000_000, "{} bytes", whole.len());

    // The first 1 MB arrives, then the connection breaks; the client resumes from there.
    let first = server.http_get(&path, &[("Range", "bytes=0-999999")]);
    assert_eq!(first.status().as_u16(), 206);
    assert_eq!(
        header(&first, "content-range"),
        format!("bytes 0-999999/{}", whole.len())
    );
    let mut resumed = first.bytes().expect("part").to_vec();
    let rest = server.http_get(&path, &[("Range", "bytes=1000000-"), ("If-Range", &etag)]);
    assert_eq!(rest.status().as_u16(), 206);
    resumed.extend_from_slice(&rest.bytes().expect("rest"));
    assert_eq!(resumed, whole);

    // A stale validator gets the whole file; an impossible range a 416; a cached copy a 304.
    let stale = server.http_get(&path, &[("Range", "bytes=10-"), ("If-Range", "\"old\"")]);
    assert_eq!(stale.status().as_u16(), 200);
    assert_eq!(stale.bytes().expect("body").len(), whole.len());
    let beyond = server.http_get(&path, &[("Range", &format!("bytes={}-", whole.len() + 10))]);
    assert_eq!(beyond.status().as_u16(), 416);
    assert_eq!(
        header(&beyond, "content-range"),
        format!("bytes */{}", whole.len())
    );
    let cached = server.http_get(&path, &[("If-None-Match", &etag)]);
    assert_eq!(cached.status().as_u16(), 304);
    let tail = server.http_get(&path, &[("Range", "bytes=-10")]);
    assert_eq!(
        tail.bytes().expect("tail").to_vec(),
        whole[whole.len() - 10..].to_vec()
    );
}

#[test]
fn stop_ends_a_long_query_within_seconds_and_frees_its_slot() {
    let server = Server::start("workers = 1\nsample_sf = 0.05\n");
    let (_, v) = server.json(
        "POST",
        "/kylin/api/async_query",
        Some(
            &json!({"sql": "select * from lineorder cross join supplier", "project": "ssb"})
                .to_string(),
        ),
    );
    let id = v["data"]["queryID"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log().contains("query started") {
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another user cannot stop it; to them it does not exist.
    server.add_user(&["mallory", "--project", "ssb"], "m4llory-pw");
    let mallory = basic("mallory", "m4llory-pw");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = server.send(
            "DELETE",
            &format!("/kylin/api/async_query/stop/{id}"),
            Some(&mallory),
            None,
        );
        match res.status().as_u16() {
            401 => {
                assert!(Instant::now() < deadline, "mallory never got in");
                std::thread::sleep(Duration::from_millis(400));
            }
            code => {
                assert_eq!(code, 404);
                break;
            }
        }
    }

    let started = Instant::now();
    let (status, v) = server.json(
        "DELETE",
        &format!("/kylin/api/async_query/stop/{id}?project=ssb"),
        None,
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert!(took < Duration::from_secs(4), "stop took {took:?}");
    let v = server.status(&id);
    assert_eq!(v["data"]["status"], "FAILED");
    assert_eq!(v["data"]["info"], "stopped by user");
    let (status, _) = server.json("DELETE", &format!("/kylin/api/async_query/stop/{id}"), None);
    assert_eq!(status, 409, "a finished query cannot be stopped");

    // The only slot is free again.
    let started = Instant::now();
    let next = server.submit("select count(*) from supplier", "ssb");
    assert_eq!(server.wait(&next)["data"]["status"], "SUCCESSFUL");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn delete_by_id_and_by_project_and_age() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let one = server.submit("select count(*) from lineorder", "ssb");
    let two = server.submit("select count(*) from supplier", "ssb");
    let elsewhere = server.submit("select 1", "DEFAULT");
    for id in [&one, &two, &elsewhere] {
        assert_eq!(server.wait(id)["data"]["status"], "SUCCESSFUL");
    }
    let result_file = server.data_dir.join("results").join(format!("{one}.1"));
    assert!(result_file.exists());

    let (status, v) = server.json("DELETE", &format!("/kylin/api/async_query/{one}"), None);
    assert_eq!((status, &v["data"]), (200, &json!(true)), "{v}");
    assert_eq!(server.status(&one)["data"]["status"], "MISSING");
    assert!(!result_file.exists(), "the result file went with the query");
    let (status, _) = server.json("DELETE", &format!("/kylin/api/async_query/{one}"), None);
    assert_eq!(status, 404);

    // A malformed time explains the format; a non-admin may not delete by age.
    let (status, v) = server.json(
        "DELETE",
        "/kylin/api/async_query?project=ssb&older_than=yesterday",
        None,
    );
    assert_eq!(status, 400);
    assert!(
        v["msg"]
            .as_str()
            .expect("msg")
            .contains("yyyy-MM-dd HH:mm:ss"),
        "{v}"
    );
    server.add_user(&["dave", "--project", "ssb"], "d4ve-pw");
    let dave = basic("dave", "d4ve-pw");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = server.send(
            "DELETE",
            "/kylin/api/async_query?project=ssb&older_than=2999-01-01%2000:00:00",
            Some(&dave),
            None,
        );
        match res.status().as_u16() {
            401 => {
                assert!(Instant::now() < deadline, "dave never got in");
                std::thread::sleep(Duration::from_millis(400));
            }
            code => {
                assert_eq!(code, 403);
                break;
            }
        }
    }

    // Nothing is older than 2000; everything in ssb is older than 2999; DEFAULT is spared.
    let (status, _) = server.json(
        "DELETE",
        "/kylin/api/async_query?project=ssb&older_than=2000-01-01%2000:00:00",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(server.status(&two)["data"]["status"], "SUCCESSFUL");
    let (status, _) = server.json(
        "DELETE",
        "/kylin/api/async_query",
        Some(&json!({"project": "ssb", "older_than": "2999-01-01 00:00:00"}).to_string()),
    );
    assert_eq!(status, 200);
    assert_eq!(server.status(&two)["data"]["status"], "MISSING");
    assert_eq!(server.status(&elsewhere)["data"]["status"], "SUCCESSFUL");
}

#[test]
fn the_accept_header_chooses_kylin_4_or_kylin_5_shapes() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let body = json!({"sql": "select 1", "project": "ssb"}).to_string();
    let v4: Value = server
        .http_send(
            "POST",
            "/kylin/api/async_query",
            &[("Accept", V4)],
            Some(&body),
        )
        .json()
        .expect("json");
    let id = v4["data"]["query_id"]
        .as_str()
        .expect("query_id in v4")
        .to_owned();
    assert!(v4["data"].get("queryID").is_none(), "{v4}");
    server.wait(&id);
    let status: Value = server
        .http_get(
            &format!("/kylin/api/async_query/{id}/status"),
            &[("Accept", "application/vnd.apache.kylin-v4+json")],
        )
        .json()
        .expect("json");
    assert_eq!(status["data"]["query_id"], id.as_str());
    assert_eq!(status["data"]["status"], "SUCCESSFUL");
    for accept in [
        "*/*",
        "application/json",
        "application/vnd.apache.kylin-v2+json",
    ] {
        let v: Value = server
            .http_get(
                &format!("/kylin/api/async_query/{id}/status"),
                &[("Accept", accept)],
            )
            .json()
            .expect("json");
        assert_eq!(v["data"]["queryID"], id.as_str(), "{accept}");
    }
}

#[test]
fn a_csv_result_downloads_as_any_format_without_running_again() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let rows = reference(&server);
    let id = run_with(&server, json!({"sql": SQL, "project": "ssb"}));
    let path = format!("/kylin/api/async_query/{id}/result");

    // Parquet, read back with the column types the query had.
    let res = get(&server, &format!("{path}?format=parquet"));
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        header(&res, "content-type"),
        "application/vnd.apache.parquet"
    );
    assert!(header(&res, "content-disposition").contains("result.parquet"));
    use polars::prelude::{DataType, ParquetReader, SerReader};
    let frame = ParquetReader::new(Cursor::new(res.bytes().expect("parquet").to_vec()))
        .finish()
        .expect("valid parquet");
    assert_eq!(frame.height(), rows.len());
    assert_eq!(
        frame.column("LO_ORDERKEY").expect("column").dtype(),
        &DataType::Int64
    );
    for (i, row) in rows.iter().enumerate().step_by(97) {
        let got: Vec<String> = frame
            .get_row(i)
            .expect("row")
            .0
            .iter()
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .collect();
        assert_eq!(&got, row, "parquet row {i}");
    }

    // XLSX with a header row.
    let res = get(&server, &format!("{path}?format=xlsx&include_header=true"));
    let cells = crate::harness::xlsx_cells(&res.bytes().expect("xlsx"));
    assert_eq!(cells[0], NAMES);
    assert_eq!(&cells[1..], &rows[..]);

    // JSON, and Kylin 4's includeHeader on a CSV download with another separator.
    let res = get(&server, &format!("{path}?format=json"));
    let objects: Vec<Value> =
        serde_json::from_slice(&res.bytes().expect("json")).expect("a JSON array");
    assert_eq!(objects.len(), rows.len());
    assert_eq!(objects[0]["LO_ORDERKEY"].to_string(), rows[0][0]);
    let res = get(&server, &format!("{path}?includeHeader=true&separator=%7C"));
    let text = res.text().expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(NAMES.join("|").as_str()));
    assert_eq!(
        lines.next().map(|l| l.replace('|', ",")),
        Some(rows[0].join(","))
    );
    assert_eq!(text.lines().count(), rows.len() + 1);

    // The stored file is untouched, and a source that cannot be converted says why.
    assert_eq!(
        String::from_utf8(server.result(&id))
            .expect("utf-8")
            .lines()
            .count(),
        rows.len()
    );
    let xlsx = run_with(
        &server,
        json!({"sql": SQL, "project": "ssb", "format": "xlsx"}),
    );
    let res = get(
        &server,
        &format!("/kylin/api/async_query/{xlsx}/result?format=csv"),
    );
    assert_eq!(res.status().as_u16(), 400);
    let v: Value = res.json().expect("envelope");
    assert!(
        v["msg"].as_str().expect("msg").contains("stored as xlsx"),
        "{v}"
    );
    let res = get(&server, &format!("{path}?format=xls"));
    assert_eq!(res.status().as_u16(), 400);
}
