//! The result store contract against a real S3 server (SeaweedFS, started by `cargo xtask ci`,
//! which sets `SPOOL_TEST_S3_ENDPOINT`, `SPOOL_TEST_S3_BUCKET` and the AWS keys).

use super::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need an S3 server. `cargo xtask ci` installs and \
             starts one; for a shell, `eval \"$(cargo xtask services start)\"` does the same"
        )
    })
}

/// A config for a fresh prefix of the test bucket.
fn config() -> S3Config {
    let mut config = S3Config::from_url(&format!(
        "s3://{}/contract-{}",
        env("SPOOL_TEST_S3_BUCKET"),
        spool_domain::QueryId::new_random()
    ))
    .expect("url");
    config.endpoint = Some(env("SPOOL_TEST_S3_ENDPOINT"));
    config.allow_http = true;
    config
}

#[tokio::test]
async fn keeps_the_result_store_contract() {
    let store = S3ResultStore::open(&config()).await.expect("open");
    spool_ports::testing::result_store_contract(&store).await;
}

#[tokio::test]
async fn a_result_of_many_parts_reads_back_exactly_and_names_its_object() {
    let store = S3ResultStore::open(&config()).await.expect("open");
    let key = ResultKey::new(spool_domain::QueryId::new_random(), 3);
    // Three full parts and a partial one, written in odd pieces from a blocking thread.
    let expected: Vec<u8> = (0..3 * SMALL_PART + 12_345)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect();
    let mut sink = store.create(key).await.expect("create");
    let bytes = expected.clone();
    let sink = tokio::task::spawn_blocking(move || {
        for piece in bytes.chunks(1_000_003) {
            io::Write::write_all(&mut sink, piece).expect("write");
        }
        sink
    })
    .await
    .expect("writer");
    assert!(
        store.open(key).await.expect("open").is_none(),
        "invisible before commit"
    );
    assert_eq!(sink.commit().await.expect("commit"), expected.len() as u64);
    let stored = store.open(key).await.expect("open").expect("committed");
    assert_eq!(stored.len, expected.len() as u64);
    let mut got = Vec::new();
    let mut body = stored.body;
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(got == expected, "the bytes read back are the bytes written");
    let location = store.location(key).expect("location");
    assert!(
        location.starts_with("s3://") && location.ends_with(&format!("/{key}")),
        "{location}"
    );
    store.delete(key).await.expect("delete");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = config();
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let err = S3ResultStore::open(&config)
        .await
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach the result store s3://")
            && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
}

#[test]
fn result_store_urls_name_a_bucket_and_a_prefix() {
    let c = S3Config::from_url("s3://my-bucket/spool/results/").expect("valid");
    assert_eq!(
        (c.bucket.as_str(), c.prefix.as_str()),
        ("my-bucket", "spool/results")
    );
    assert_eq!(c.url(), "s3://my-bucket/spool/results");
    assert_eq!(S3Config::from_url("s3://bucket").expect("valid").prefix, "");
    for bad in [
        "bucket/x",
        "s3://",
        "s3://Upper/x",
        "s3://a/x",
        "file:///tmp",
    ] {
        assert!(S3Config::from_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn results_are_stored_as_opaque_bytes_in_one_put_and_in_parts() {
    // Text sent untyped is sniffed and gzipped by SeaweedFS; every object Spool stores says it is
    // opaque bytes, whether it went up in one PUT or as a multipart upload.
    let store = S3ResultStore::open(&config()).await.expect("open");
    let line = b"1,19970101,ASIA,MFGR#12,1234.5600\n";
    for len in [1_000, 2 * SMALL_PART + 77] {
        let key = ResultKey::new(spool_domain::QueryId::new_random(), 1);
        let text: Vec<u8> = line.iter().copied().cycle().take(len).collect();
        let mut sink = store.create(key).await.expect("create");
        let sink = tokio::task::spawn_blocking(move || {
            io::Write::write_all(&mut sink, &text).expect("write");
            sink
        })
        .await
        .expect("writer");
        assert_eq!(sink.commit().await.expect("commit"), len as u64);
        let got = store
            .store
            .get(&store.path_of(key))
            .await
            .expect("get the object");
        assert_eq!(
            got.attributes
                .get(&object_store::Attribute::ContentType)
                .map(|v| v.as_ref().to_owned()),
            Some(OPAQUE.to_owned()),
            "a result of {len} bytes"
        );
        store.delete(key).await.expect("delete");
    }
}
