//! Serving a result file: content type and RFC 6266 file name from the query's output options,
//! an `ETag`, conditional requests, single byte ranges so a broken download resumes, and
//! `gzip` or `zstd` content coding on the fly for whole-file downloads that accept it.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use spool_core::{DownloadInfo, Spool};

use crate::ApiError;

/// What RFC 5987 lets through unencoded in `filename*` (attr-char); all else is %-encoded.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<name>`, or just
/// `attachment; filename="<name>"` when the name is plain ASCII. The name was cleaned at
/// submit (no path separators or control characters); the fallback replaces everything outside
/// printable ASCII, and quotes and backslashes, with `_`.
pub(crate) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if fallback == name {
        // Plain ASCII: the seed's exact header.
        return format!("attachment; filename=\"{name}\"");
    }
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR)
    )
}

/// A strong validator: a result never changes once committed, and a re-run after a crash
/// commits at a different time.
fn etag(info: &DownloadInfo) -> String {
    format!(
        "\"{}-{}-{}\"",
        info.job.id,
        info.finished_at.as_millis(),
        info.bytes
    )
}

/// `sha-256=:<base64>:` (RFC 9530) of a lowercase hex SHA-256; `None` if it is not one.
fn repr_digest(hex: &str) -> Option<String> {
    use base64::Engine;
    if hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    Some(format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(bytes?)
    ))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn matches_etag(list: &str, tag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

/// Which bytes to send: all of them, one range, or none satisfiable.
enum Part {
    Whole,
    Range(u64, u64),
}

fn requested_part(headers: &HeaderMap, len: u64, tag: &str) -> Result<Part, ApiError> {
    let Some(range) = header_str(headers, header::RANGE) else {
        return Ok(Part::Whole);
    };
    // A resumed download whose file changed meanwhile gets the whole new file.
    if let Some(if_range) = header_str(headers, header::IF_RANGE)
        && if_range.trim() != tag
    {
        return Ok(Part::Whole);
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        // A malformed Range header is ignored (RFC 9110, 14.2).
        return Ok(Part::Whole);
    };
    match parsed.validate(len).as_deref() {
        Ok([only]) => Ok(Part::Range(*only.start(), *only.end())),
        // Several ranges: the whole file is a valid answer and simpler for every client.
        Ok(_) => Ok(Part::Whole),
        Err(_) => Err(ApiError::RangeNotSatisfiable(len)),
    }
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|e| ApiError::Internal(Box::new(e)))
}

/// A content coding applied on the fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The coding to apply for `Accept-Encoding`: zstd, else gzip, when acceptable (q > 0); none
/// for identity or anything else.
fn chosen_coding(headers: &HeaderMap) -> Option<Coding> {
    let mut gzip = false;
    let mut zstd = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match name.as_str() {
                "gzip" | "x-gzip" => gzip = true,
                "zstd" => zstd = true,
                _ => {}
            }
        }
    }
    if zstd {
        Some(Coding::Zstd)
    } else if gzip {
        Some(Coding::Gzip)
    } else {
        None
    }
}

/// Feeds every chunk from `input` to the encoder `enc` and sends what it wrote so far to
/// `output` after each; then the end of the stream. Stops early when the client is gone.
fn pump<E: std::io::Write>(
    mut enc: E,
    written: fn(&mut E) -> &mut Vec<u8>,
    finish: fn(E) -> std::io::Result<Vec<u8>>,
    input: &mut tokio::sync::mpsc::Receiver<axum::body::Bytes>,
    output: &tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
) -> std::io::Result<()> {
    while let Some(chunk) = input.blocking_recv() {
        enc.write_all(&chunk)?;
        let out = std::mem::take(written(&mut enc));
        if !out.is_empty() && output.blocking_send(Ok(out.into())).is_err() {
            return Ok(());
        }
    }
    let rest = finish(enc)?;
    if !rest.is_empty() {
        let _ = output.blocking_send(Ok(rest.into()));
    }
    Ok(())
}

/// Compresses `body` with `coding` on a blocking thread as it streams: two chunks in flight on
/// each side, so memory stays bounded whatever the file's size.
fn compressed(
    coding: Coding,
    mut body: futures::stream::BoxStream<'static, std::io::Result<axum::body::Bytes>>,
) -> Body {
    use futures::StreamExt;
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(2);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(2);
    let failed = out_tx.clone();
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if in_tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = failed.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let result = match coding {
            Coding::Gzip => pump(
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
                flate2::write::GzEncoder::get_mut,
                flate2::write::GzEncoder::finish,
                &mut in_rx,
                &out_tx,
            ),
            Coding::Zstd => zstd::stream::write::Encoder::new(Vec::new(), 3).and_then(|enc| {
                pump(
                    enc,
                    zstd::stream::write::Encoder::get_mut,
                    zstd::stream::write::Encoder::finish,
                    &mut in_rx,
                    &out_tx,
                )
            }),
        };
        if let Err(e) = result {
            let _ = out_tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx)))
}

/// Answers a download of a successful query's result converted to `wanted`: streamed as it
/// is converted, so no length, ranges or validators (a ranged request gets the whole file).
pub(crate) async fn respond_converted(
    spool: &Spool,
    info: &DownloadInfo,
    wanted: spool_domain::OutputSpec,
    head: bool,
) -> Result<Response, ApiError> {
    let content_type = header_value(&wanted.content_type())?;
    let disposition = header_value(&content_disposition(&wanted.download_name()))?;
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(spool.transcoded(info, wanted).await?)
    };
    let mut response = Response::new(body);
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, content_type);
    out.insert(header::CONTENT_DISPOSITION, disposition);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    Ok(response)
}

/// Answers a download of a successful query's result.
/// A `HEAD` (`head`) answers the same headers from the job record without opening the result.
pub(crate) async fn respond(
    spool: &Spool,
    info: &DownloadInfo,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    // A ranged request gets identity bytes: ranges count bytes of the file as stored.
    // A file stored compressed is served as it is.
    let coding = if headers.contains_key(header::RANGE) || info.uncompressed_bytes.is_some() {
        None
    } else {
        chosen_coding(headers)
    };
    let tag = match coding {
        // A strong validator names one encoding of the file.
        Some(c) => format!("{}-{}\"", etag(info).trim_end_matches('"'), c.name()),
        None => etag(info),
    };
    let len = info.bytes;
    let output = &info.job.request.output;
    let mut response = Response::new(Body::empty());
    let out = response.headers_mut();
    out.insert(header::ETAG, header_value(&tag)?);
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // The digest is of the file as stored; a coded answer is another representation.
    if let Some(digest) = info
        .sha256
        .as_deref()
        .and_then(repr_digest)
        .filter(|_| coding.is_none())
    {
        // RFC 9530: the digest of the whole file, on every answer, ranged ones included.
        out.insert("repr-digest", header_value(&digest)?);
    }
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::CONTENT_TYPE, header_value(&output.content_type())?);
    out.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(&output.download_name()))?,
    );
    if header_str(headers, header::IF_NONE_MATCH).is_some_and(|list| matches_etag(list, &tag)) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let (range, status) = match requested_part(headers, len, &tag)? {
        Part::Whole => (0..len, StatusCode::OK),
        Part::Range(first, last) => {
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {first}-{last}/{len}"))?,
            );
            (first..last + 1, StatusCode::PARTIAL_CONTENT)
        }
    };
    *response.status_mut() = status;
    if head {
        if coding.is_some() {
            // The coded length is known only once it is sent.
            response.headers_mut().insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.map_or("identity", Coding::name)),
            );
        } else {
            response.headers_mut().insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(range.end - range.start),
            );
        }
        return Ok(response);
    }
    let stored = spool.open_result_range(info, range).await?;
    if let Some(coding) = coding {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.name()),
        );
        *response.body_mut() = compressed(coding, stored.body);
        return Ok(response);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(stored.len));
    *response.body_mut() = Body::from_stream(stored.body);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_travel_as_rfc_6266() {
        assert_eq!(
            content_disposition("result.csv"),
            "attachment; filename=\"result.csv\""
        );
        assert_eq!(
            content_disposition("订单 \"q\".json"),
            "attachment; filename=\"__ _q_.json\"; filename*=UTF-8''%E8%AE%A2%E5%8D%95%20%22q%22.json"
        );
    }

    #[test]
    fn digests_travel_as_rfc_9530() {
        // The SHA-256 of the empty string.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            repr_digest(empty).as_deref(),
            Some("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")
        );
        assert_eq!(repr_digest("zz"), None);
    }

    #[test]
    fn accept_encoding_picks_zstd_then_gzip_and_honours_q_zero() {
        let pick = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("ascii"),
            );
            chosen_coding(&headers)
        };
        assert_eq!(pick("gzip, deflate, br"), Some(Coding::Gzip));
        assert_eq!(pick("gzip, zstd"), Some(Coding::Zstd));
        assert_eq!(pick("zstd;q=0, gzip;q=0.5"), Some(Coding::Gzip));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(chosen_coding(&HeaderMap::new()), None);
    }

    #[test]
    fn etag_lists_match_exactly_or_by_star() {
        assert!(matches_etag("\"a\", \"b\"", "\"b\""));
        assert!(matches_etag("*", "\"b\""));
        assert!(!matches_etag("\"a\"", "\"b\""));
    }
}
