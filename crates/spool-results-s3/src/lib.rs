//! The result store on an S3-compatible object store (AWS S3, MinIO, SeaweedFS, ...).
//!
//! Layout: the result under key `k` is the object `<prefix>/<k>` (`<query id>.<attempt>`).
//!
//! Invariants:
//! - Nothing is visible before commit: a result larger than one part is a multipart upload,
//!   which S3 shows only once it is completed; a smaller one is a single `PUT`, atomic too.
//! - Memory per result being written is bounded: one part being filled plus at most
//!   [`PARTS_IN_FLIGHT`] parts being uploaded; a writer that gets ahead waits in `write`.
//! - A sink that fails, is aborted or is dropped aborts its multipart upload (the drop does it
//!   in the background); a bucket lifecycle rule for incomplete uploads is the safety net for
//!   a process that dies mid-upload.
//! - Only a [`ResultKey`] becomes an object name, so no request can name an object.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use spool_domain::ResultKey;
use spool_ports::{ResultSink, ResultStore, ResultStoreError, StoredResult};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::warn;

/// Part size for the first [`SMALL_PARTS`] parts; later parts are [`LARGE_PART`], so a result
/// can grow far past S3's 10,000-part limit times the small size.
const SMALL_PART: usize = 8 * 1024 * 1024;
const SMALL_PARTS: usize = 1000;
const LARGE_PART: usize = 64 * 1024 * 1024;
/// Parts uploading at once per result, besides the one being filled.
const PARTS_IN_FLIGHT: usize = 3;

/// Where and how to reach the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix results live under (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The endpoint URL for a store other than AWS (`http://127.0.0.1:8333`); `None`: AWS.
    pub endpoint: Option<String>,
    /// The region; `None`: the environment's, else `us-east-1`.
    pub region: Option<String>,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
    /// The access key id; `None`: `AWS_ACCESS_KEY_ID` or the environment's other sources.
    pub access_key_id: Option<String>,
    /// The secret key; `None`: `AWS_SECRET_ACCESS_KEY` or the environment's other sources.
    pub secret_access_key: Option<String>,
}

impl S3Config {
    /// Parses `s3://bucket/prefix` (the prefix may be empty) into a config with no endpoint.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            format!("result_store must be an s3://bucket/prefix URL, not {url:?}")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || !bucket.chars().all(valid) {
            return Err(format!(
                "{bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')"
            ));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: None,
            region: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
        })
    }

    /// The URL this config was read from, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A [`ResultStore`] in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3ResultStore {
    store: Arc<AmazonS3>,
    prefix: Path,
    url: String,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The settings do not make a client.
    #[error("invalid S3 settings for {url}: {source}")]
    Config {
        /// The store's URL.
        url: String,
        /// What the client said.
        #[source]
        source: object_store::Error,
    },
    /// The bucket could not be listed (unreachable endpoint, wrong credentials, no bucket).
    #[error("cannot reach the result store {url}{endpoint}: {source}")]
    Unreachable {
        /// The store's URL.
        url: String,
        /// ` at <endpoint>` when one is configured.
        endpoint: String,
        /// What the client said.
        #[source]
        source: object_store::Error,
    },
}

/// The content type every object is stored with. Results are opaque bytes to the store (Spool
/// serves each download with its own type); saying so keeps stores that compress what looks like
/// text from doing it: SeaweedFS sniffs a part without a type and gzips text at its best (and
/// slowest) level, which cost it a quarter of its CPU on CSV exports and again on every read.
const OPAQUE: &str = "application/octet-stream";

/// `Content-Type` for requests that carry none of their own: multipart parts (object_store
/// types only the upload's first request). Added below the signature, so it is not signed;
/// requests that type their bodies (the XML of a completion) keep their own.
fn opaque_parts() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(OPAQUE),
    );
    headers
}

fn backend(e: object_store::Error) -> ResultStoreError {
    ResultStoreError::backend(e)
}

impl S3ResultStore {
    /// Builds the client and checks that the bucket answers (one listing under the prefix).
    pub async fn open(config: &S3Config) -> Result<Self, OpenError> {
        let url = config.url();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_allow_http(config.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_default_content_type(OPAQUE)
                    .with_default_headers(opaque_parts()),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|source| OpenError::Config {
            url: url.clone(),
            source,
        })?;
        let prefix = Path::from(config.prefix.as_str());
        let this = Self {
            store: Arc::new(store),
            prefix,
            url: url.clone(),
        };
        this.store
            .list_with_delimiter(Some(&this.prefix))
            .await
            .map_err(|source| OpenError::Unreachable {
                url,
                endpoint: config
                    .endpoint
                    .as_ref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default(),
                source,
            })?;
        Ok(this)
    }

    fn path_of(&self, key: ResultKey) -> Path {
        self.prefix.clone().join(key.to_string())
    }

    async fn get(
        &self,
        key: ResultKey,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        let path = self.path_of(key);
        if let Some(r) = &range
            && r.start >= r.end
        {
            // S3 refuses empty ranges; the object must still exist.
            return match self.store.head(&path).await {
                Ok(_) => Ok(Some(StoredResult {
                    len: 0,
                    body: futures::stream::empty().boxed(),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(backend(e)),
            };
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let len = match &range {
            Some(r) => r.end - r.start,
            None => got.meta.size,
        };
        let body = got
            .into_stream()
            .map(|chunk| chunk.map_err(io::Error::other))
            .boxed();
        Ok(Some(StoredResult { len, body }))
    }
}

#[async_trait]
impl ResultStore for S3ResultStore {
    async fn create(&self, key: ResultKey) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        let runtime = Handle::try_current().map_err(ResultStoreError::backend)?;
        Ok(Box::new(S3Sink {
            store: Arc::clone(&self.store),
            path: self.path_of(key),
            runtime,
            buffer: Vec::with_capacity(SMALL_PART),
            upload: None,
            in_flight: VecDeque::new(),
            parts: 0,
            written: 0,
            failed: None,
        }))
    }

    async fn open(&self, key: ResultKey) -> Result<Option<StoredResult>, ResultStoreError> {
        self.get(key, None).await
    }

    async fn open_range(
        &self,
        key: ResultKey,
        range: std::ops::Range<u64>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        self.get(key, Some(range)).await
    }

    /// A server-side copy: the bytes never pass through Spool.
    async fn copy(&self, from: ResultKey, to: ResultKey) -> Result<u64, ResultStoreError> {
        let (source, target) = (self.path_of(from), self.path_of(to));
        match self.store.copy(&source, &target).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ResultStoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("result {from} is gone"),
                )));
            }
            Err(e) => return Err(backend(e)),
        }
        let meta = self.store.head(&target).await.map_err(backend)?;
        Ok(meta.size)
    }

    async fn delete(&self, key: ResultKey) -> Result<(), ResultStoreError> {
        match self.store.delete(&self.path_of(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(&self) -> Result<Vec<ResultKey>, ResultStoreError> {
        let mut listing = self.store.list(Some(&self.prefix));
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(backend)?;
            if let Some(key) = meta.location.filename().and_then(|n| n.parse().ok()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn location(&self, key: ResultKey) -> Option<String> {
        Some(format!("{}/{key}", self.url))
    }
}

/// A result being uploaded.
struct S3Sink {
    store: Arc<AmazonS3>,
    path: Path,
    runtime: Handle,
    /// The part being filled.
    buffer: Vec<u8>,
    /// The multipart upload, started when the first part is full.
    upload: Option<Box<dyn MultipartUpload>>,
    /// Parts being uploaded, oldest first.
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
    /// Parts handed to the upload so far.
    parts: usize,
    /// Bytes accepted so far.
    written: u64,
    /// The first upload error; every later write fails with it.
    failed: Option<String>,
}

fn part_size(parts: usize) -> usize {
    if parts < SMALL_PARTS {
        SMALL_PART
    } else {
        LARGE_PART
    }
}

/// Waits on `task` from a blocking thread (the engine's writer), never from the reactor.
fn wait<T>(task: JoinHandle<object_store::Result<T>>) -> io::Result<T> {
    futures::executor::block_on(task)
        .map_err(io::Error::other)?
        .map_err(io::Error::other)
}

impl S3Sink {
    /// Hands the full buffer to the upload as the next part, waiting while too many are out.
    fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let store = Arc::clone(&self.store);
            let path = self.path.clone();
            let started = self
                .runtime
                .spawn(async move { store.put_multipart(&path).await });
            self.upload = Some(wait(started)?);
        }
        let next = Vec::with_capacity(part_size(self.parts + 1));
        let part = PutPayload::from(std::mem::replace(&mut self.buffer, next));
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| io::Error::other("no upload"))?;
        let uploading = upload.put_part(part);
        self.in_flight.push_back(self.runtime.spawn(uploading));
        self.parts += 1;
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            if let Some(oldest) = self.in_flight.pop_front() {
                wait(oldest)?;
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some(e.to_string());
        e
    }

    /// Awaits every part still uploading.
    async fn drain(&mut self) -> object_store::Result<()> {
        let mut first = Ok(());
        while let Some(part) = self.in_flight.pop_front() {
            let done = part
                .await
                .unwrap_or_else(|e| Err(object_store::Error::JoinError { source: e }));
            if first.is_ok() {
                first = done;
            }
        }
        first
    }

    async fn finish(&mut self) -> object_store::Result<()> {
        match self.upload.as_mut() {
            None => {
                let bytes = Bytes::from(std::mem::take(&mut self.buffer));
                self.store.put(&self.path, bytes.into()).await?;
            }
            Some(upload) => {
                if !self.buffer.is_empty() {
                    let last = PutPayload::from(std::mem::take(&mut self.buffer));
                    self.in_flight
                        .push_back(tokio::spawn(upload.put_part(last)));
                }
                self.drain().await?;
                if let Some(upload) = self.upload.as_mut() {
                    upload.complete().await?;
                }
                self.upload = None;
            }
        }
        Ok(())
    }
}

impl io::Write for S3Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(format!(
                "uploading the result failed: {e}"
            )));
        }
        let room = part_size(self.parts) - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        self.written += n as u64;
        if self.buffer.len() == part_size(self.parts) {
            self.send_part().map_err(|e| self.fail(e))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ResultSink for S3Sink {
    async fn commit(mut self: Box<Self>) -> Result<u64, ResultStoreError> {
        if let Some(e) = self.failed.take() {
            self.abort_upload().await;
            return Err(ResultStoreError::Io(io::Error::other(format!(
                "uploading the result failed: {e}"
            ))));
        }
        match self.finish().await {
            Ok(()) => Ok(self.written),
            Err(e) => {
                self.abort_upload().await;
                Err(backend(e))
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ResultStoreError> {
        self.abort_upload().await;
        Ok(())
    }
}

impl S3Sink {
    async fn abort_upload(&mut self) {
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            warn!(path = %self.path, error = %e, "aborting a multipart upload failed; a bucket lifecycle rule removes it");
        }
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let path = self.path.clone();
            self.runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    warn!(path = %path, error = %e, "aborting an abandoned multipart upload failed; a bucket lifecycle rule removes it");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
