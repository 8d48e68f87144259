use super::*;
use polars::prelude::{ParquetReader, SerReader, df};

/// A sink that keeps the bytes in memory.
#[derive(Default)]
struct VecSink(Vec<u8>);

impl Write for VecSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ResultSink for VecSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        Ok(self.0.len() as u64)
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        Ok(())
    }
}

/// What Polars' own writer makes of `batch` with our settings.
fn polars_csv(batch: &DataFrame, separator: u8) -> String {
    let mut out = Vec::new();
    CsvWriter::new(&mut out)
        .include_header(false)
        .with_separator(separator)
        .with_quote_style(QuoteStyle::Necessary)
        .finish(&mut batch.clone())
        .expect("polars csv");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_typed_csv_writer_writes_what_polars_writes() {
    let ints: Vec<i64> = vec![
        0,
        7,
        -7,
        9,
        10,
        99,
        100,
        -100,
        12_345_678,
        i64::MAX,
        i64::MIN,
    ];
    let n = ints.len();
    let text = [
        "plain",
        "",
        "a,b",
        "a;b",
        "say \"hi\"",
        "\"",
        "two\nlines",
        "cr\rhere",
        "中文",
        " x ",
        "tab\tin",
    ];
    let batch = df!(
            "I" => &ints,
            "NULLABLE" => (0..n as i64).map(|i| (i % 3 != 0).then_some(i * 1_000_003)).collect::<Vec<_>>(),
            "SMALL" => (0..n as i32).map(|i| i - 5).collect::<Vec<_>>(),
            "U" => (0..n as u64).map(|i| u64::MAX - i).collect::<Vec<_>>(),
            "B" => (0..n).map(|i| match i % 3 { 0 => None, 1 => Some(true), _ => Some(false) }).collect::<Vec<_>>(),
            "S" => text.iter().enumerate().map(|(i, t)| (i != 4).then_some(*t)).collect::<Vec<_>>(),
        )
        .expect("frame");
    for separator in [b',', b';', b'\t', b'|'] {
        let mut out = Vec::new();
        assert!(typed_csv(&batch, separator, &mut out).expect("typed"));
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            polars_csv(&batch, separator),
            "separator {:?}",
            separator as char
        );
    }
    // More rows, long and quoted fields, 32-bit columns with and without NULLs (read as they
    // are, or widened), and columns in one chunk and in several.
    let rows = 2_500;
    let mut long = df!(
        "K" => (0..rows as i32).map(|i| i * 7919 - 40_000).collect::<Vec<_>>(),
        "K_NULLS" => (0..rows as i32).map(|i| (i % 5 != 0).then_some(i)).collect::<Vec<_>>(),
        "BIG" => (0..rows as i64).map(|i| i64::MAX / (i + 1)).collect::<Vec<_>>(),
        "TEXT" => (0..rows).map(|i| "x".repeat(i % 40)).collect::<Vec<_>>(),
        "QUOTED" => (0..rows).map(|i| format!("{}\"{}", "y".repeat(i % 23), i)).collect::<Vec<_>>(),
    )
    .expect("frame");
    let tail = long.slice(1_000, 1_500);
    long = long.slice(0, 1_000);
    long.vstack_mut(&tail).expect("stack");
    assert!(
        long.first_col_n_chunks() > 1,
        "the test wants chunked columns"
    );
    let mut whole = long.clone();
    whole.rechunk_mut();
    for frame in [long, whole] {
        let mut out = Vec::new();
        assert!(typed_csv(&frame, b',', &mut out).expect("typed"));
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            polars_csv(&frame, b',')
        );
    }
    // A type the typed writer leaves to Polars: nothing written, the caller falls back.
    let floats = df!("F" => [1.5f64]).expect("frame");
    let mut out = Vec::new();
    assert!(!typed_csv(&floats, b',', &mut out).expect("typed"));
    assert!(out.is_empty());
}

#[test]
fn decimal_digits_match_itoa_at_every_length() {
    let mut values = vec![0u64, u64::MAX];
    let mut p = 1u64;
    while let Some(next) = p.checked_mul(10) {
        values.extend([p - 1, p, p + 1, next - 1]);
        p = next;
    }
    values.extend((0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 64)));
    let mut out = Vec::new();
    let mut expected = String::new();
    for v in values {
        write_u64(&mut out, v);
        out.push(b' ');
        expected.push_str(itoa::Buffer::new().format(v));
        expected.push(' ');
        let signed = v as i64;
        write_i64(&mut out, signed);
        out.push(b' ');
        expected.push_str(itoa::Buffer::new().format(signed));
        expected.push(' ');
        for narrow in [v as i32, (v >> 32) as i32] {
            write_i64(&mut out, i64::from(narrow));
            out.push(b' ');
            expected.push_str(itoa::Buffer::new().format(narrow));
            expected.push(' ');
        }
    }
    for narrow in [
        i32::MIN,
        i32::MAX,
        -1,
        -10,
        -99,
        -100,
        99_999_999,
        100_000_000,
    ] {
        write_i64(&mut out, i64::from(narrow));
        out.push(b' ');
        expected.push_str(itoa::Buffer::new().format(narrow));
        expected.push(' ');
    }
    assert_eq!(String::from_utf8(out).expect("ascii"), expected);
}

#[test]
fn an_xlsx_result_past_the_sheet_limit_fails_with_a_reason() {
    let dir = std::env::temp_dir().join("spool-xlsx-test");
    let mut xlsx = Xlsx::new(vec!["N".into()], true, dir, 10);
    let mut sink = VecSink::default();
    xlsx.begin(&mut sink).expect("begin");
    let mut batch = df!("N" => (0..9i64).collect::<Vec<_>>()).expect("frame");
    xlsx.write(&mut batch, &mut sink)
        .expect("9 rows and a header fit in 10");
    let mut one = df!("N" => [9i64]).expect("frame");
    let e = xlsx
        .write(&mut one, &mut sink)
        .expect_err("the 11th row does not fit");
    assert_eq!(
        user_reason(&e).as_deref(),
        Some(
            "result has more rows than an XLSX sheet holds (10 including the header); use csv or parquet"
        )
    );
}

#[test]
fn gbk_survives_characters_split_across_writes_and_names_what_it_cannot_encode() {
    let spec = OutputSpec {
        encoding: TextEncoding::Gbk,
        ..OutputSpec::default()
    };
    let mut sink = transcode(&spec, Box::new(VecSink::default()));
    let text = "中文,x\n".as_bytes();
    // Split inside the first character.
    sink.write_all(&text[..1]).expect("write");
    sink.write_all(&text[1..]).expect("write");
    let committed = futures::executor::block_on(sink.commit()).expect("commit");
    assert_eq!(committed, 7, "D6D0 CEC4 , x \\n");
    let mut sink = transcode(&spec, Box::new(VecSink::default()));
    let e = sink.write_all("😀".as_bytes()).expect_err("not in GBK");
    assert!(
        user_reason(&e).is_some_and(|r| r.contains("U+1F600")),
        "{e}"
    );
}

fn spec(format: OutputFormat) -> OutputSpec {
    OutputSpec {
        format,
        ..OutputSpec::default()
    }
}

/// Casts the integer column `name` (days since 1970) of `frame` to dates.
fn as_dates(frame: &mut DataFrame, name: &str) {
    let dates = frame
        .column(name)
        .and_then(|c| c.cast(&DataType::Date))
        .expect("dates");
    frame.replace(name, dates).expect("date column");
}

/// Runs `batches` through the encoder for `spec` on `threads` threads; returns the bytes.
fn encode_all(spec: &OutputSpec, batches: &[DataFrame], threads: usize) -> Vec<u8> {
    let schema = batches[0].schema().as_ref().clone();
    let mut encoder = encoder(spec, &schema, std::env::temp_dir(), threads).expect("encoder");
    let mut sink = VecSink::default();
    encoder.begin(&mut sink).expect("begin");
    for batch in batches {
        encoder.write(&mut batch.clone(), &mut sink).expect("write");
    }
    encoder.finish(&mut sink).expect("finish");
    sink.0
}

#[test]
fn json_keeps_types_escapes_strings_and_writes_nulls_over_batches() {
    let mut first = df!(
        "I" => [Some(-7i32), None],
        "U" => [u64::MAX, 0],
        "F" => [Some(0.5f32), Some(f32::NAN)],
        "B" => [Some(true), None],
        "S" => [Some("say \"hi\"\n"), None],
        "D" => [Some(1i32), None],
    )
    .expect("frame");
    as_dates(&mut first, "D");
    let batches = [
        first.slice(0, 0),
        first.clone(),
        first.slice(0, 0),
        first.slice(0, 1),
    ];
    let text =
        String::from_utf8(encode_all(&spec(OutputFormat::Json), &batches, 3)).expect("utf-8");
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(
        parsed,
        serde_json::json!([
            {"I": -7, "U": u64::MAX, "F": 0.5, "B": true, "S": "say \"hi\"\n", "D": "1970-01-02"},
            {"I": null, "U": 0, "F": null, "B": null, "S": null, "D": null},
            {"I": -7, "U": u64::MAX, "F": 0.5, "B": true, "S": "say \"hi\"\n", "D": "1970-01-02"},
        ])
    );
    assert!(
        text.starts_with("[{\"I\":-7,\"U\":18446744073709551615,"),
        "{text}"
    );
    let empty = encode_all(&spec(OutputFormat::Json), &[first.slice(0, 0)], 2);
    assert_eq!(empty, b"[]\n", "an empty result is an empty array");
}

#[test]
fn batches_encoded_on_several_threads_are_written_in_order() {
    // Batches of very different sizes finish out of order on the threads.
    let batches: Vec<DataFrame> = (0..60i64)
        .map(|b| {
            let rows = if b % 7 == 0 { 20_000 } else { 1 + b % 3 };
            let start = b * 100_000;
            df!("N" => (start..start + rows).collect::<Vec<_>>()).expect("frame")
        })
        .collect();
    let expected: String = batches
        .iter()
        .flat_map(|df| {
            df.column("N")
                .and_then(|c| c.i64().cloned())
                .expect("ints")
                .into_no_null_iter()
                .collect::<Vec<_>>()
        })
        .map(|n| format!("{n}\n"))
        .collect();
    let mut csv = spec(OutputFormat::Csv);
    csv.include_header = true;
    let got = String::from_utf8(encode_all(&csv, &batches, 3)).expect("utf-8");
    assert_eq!(got, format!("N\n{expected}"));
    csv.separator = "||".to_owned();
    let got = String::from_utf8(encode_all(&csv, &batches, 2)).expect("utf-8");
    assert_eq!(
        got,
        format!("N\n{expected}"),
        "the multi-character writer too"
    );
}

#[test]
fn csv_fields_are_quoted_only_when_needed() {
    let mut out = Vec::new();
    for field in ["plain", "a||b", "say \"hi\"", "two\nlines", "a|b"] {
        csv_field(&mut out, field, "||");
        out.push(b' ');
    }
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "plain \"a||b\" \"say \"\"hi\"\"\" \"two\nlines\" a|b "
    );
}

/// Polars' own batched writer over the same row groups (what the encoder must match byte for
/// byte: it only moves the encoding onto more threads).
fn polars_parquet(groups: &[DataFrame]) -> Vec<u8> {
    let buf = SharedBuf::default();
    let mut writer = ParquetWriter::new(buf.clone())
        .with_compression(ParquetCompression::Snappy)
        .batched(groups[0].schema())
        .expect("writer");
    for group in groups {
        writer.write_batch(group).expect("row group");
    }
    writer.finish().expect("footer");
    let mut sink = VecSink::default();
    buf.drain_into(&mut sink).expect("bytes");
    sink.0
}

#[test]
fn parquet_columns_encoded_on_several_threads_make_the_file_polars_makes() {
    let rows = 2 * PARQUET_ROW_GROUP + 1_234;
    let mut frame = df!(
        "I" => (0..rows as i64).collect::<Vec<_>>(),
        "N" => (0..rows as i64).map(|i| (i % 5 != 0).then_some(i * 3)).collect::<Vec<_>>(),
        "F" => (0..rows).map(|i| i as f64 / 8.0).collect::<Vec<_>>(),
        "S" => (0..rows).map(|i| (i % 7 != 0).then(|| format!("s{}", i % 1000))).collect::<Vec<_>>(),
        "B" => (0..rows).map(|i| i % 3 == 0).collect::<Vec<_>>(),
        "D" => (0..rows as i32).map(|i| i % 20_000).collect::<Vec<_>>(),
    )
    .expect("frame");
    as_dates(&mut frame, "D");
    // Batches of half a row group: the encoder writes a row group every two.
    let half = PARQUET_ROW_GROUP / 2;
    let batches: Vec<DataFrame> = (0..rows)
        .step_by(half)
        .map(|start| frame.slice(start as i64, half))
        .collect();
    let groups: Vec<DataFrame> = (0..rows)
        .step_by(PARQUET_ROW_GROUP)
        .map(|start| frame.slice(start as i64, PARQUET_ROW_GROUP))
        .collect();
    let expected = polars_parquet(&groups);
    for threads in [1, 2, 4] {
        let got = encode_all(&spec(OutputFormat::Parquet), &batches, threads);
        assert!(
            got == expected,
            "{threads} threads: {} bytes against Polars' {}",
            got.len(),
            expected.len()
        );
    }
    let read = ParquetReader::new(std::io::Cursor::new(expected))
        .finish()
        .expect("reads back");
    assert!(read.equals_missing(&frame), "{read}");
}
