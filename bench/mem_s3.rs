//! A minimal in-memory S3 endpoint, for benchmarks only: the subset `backbeat sync` and
//! `rclone copy` need, fast enough that the mover, not the server, is measured.
//!
//! It keeps no object data. Source objects are a catalog ([`Catalog`]: keys `obj-NNNNNNNN`,
//! a size per key, one or more versions per key) whose bytes are slices of one shared random
//! buffer, served without copying. Uploads are read to the end,
//! decoded when aws-chunked, and checked against any CRC32C they carry (header or trailer),
//! then dropped; counters record what arrived.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use backbeat::s3::http::{HyperIo, Stream};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

const PATTERN_LEN: usize = 1 << 20;
const FRAME: usize = 256 * 1024;

/// The source bucket's objects: a size per key, and versions per key (version ids `null`
/// with one version, else `v000000` oldest to newest).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub sizes: Vec<u64>,
    pub versions: usize,
}

impl Catalog {
    pub fn uniform(count: usize, size: u64) -> Self {
        Self {
            sizes: vec![size; count],
            versions: 1,
        }
    }

    /// Objects (versions) in the catalog.
    pub fn objects(&self) -> usize {
        self.sizes.len() * self.versions
    }

    pub fn bytes(&self) -> u64 {
        self.sizes.iter().sum::<u64>() * self.versions as u64
    }

    pub fn key(i: usize) -> String {
        format!("obj-{i:08}")
    }

    pub fn version_id(&self, j: usize) -> String {
        if self.versions == 1 {
            "null".into()
        } else {
            format!("v{j:06}")
        }
    }

    /// A mix like a general-purpose bucket's: 70% of objects of 4-64 KiB, 27% of 64 KiB-4 MiB,
    /// 3% of 16-96 MiB (most bytes are in the few large ones). Deterministic.
    pub fn mixed(count: usize) -> Self {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sizes = (0..count)
            .map(|_| {
                let r = next() % 100;
                let (lo, hi) = if r < 70 {
                    (4 << 10, 64 << 10)
                } else if r < 97 {
                    (64 << 10, 4 << 20)
                } else {
                    (16 << 20, 96 << 20)
                };
                lo + next() % (hi - lo)
            })
            .collect();
        Self { sizes, versions: 1 }
    }
}

/// What the endpoint serves and counts.
pub struct MemS3 {
    pub source_bucket: String,
    pub catalog: Catalog,
    pattern: Bytes,
    pub bytes_received: AtomicU64,
    pub objects_completed: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub requests: AtomicU64,
    /// Size and ETag of each object written (`bucket/key`), and bytes per open upload: the
    /// data itself is dropped.
    written: std::sync::Mutex<HashMap<String, (u64, String)>>,
    uploads: std::sync::Mutex<HashMap<String, u64>>,
}

impl MemS3 {
    pub fn new(source_bucket: &str, catalog: Catalog) -> Arc<Self> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let pattern: Vec<u8> = (0..PATTERN_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Arc::new(Self {
            source_bucket: source_bucket.to_string(),
            catalog,
            pattern: Bytes::from(pattern),
            bytes_received: AtomicU64::new(0),
            objects_completed: AtomicU64::new(0),
            checksum_failures: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            written: Default::default(),
            uploads: Default::default(),
        })
    }

    fn index(&self, key: &str) -> Option<usize> {
        let i: usize = key.strip_prefix("obj-")?.parse().ok()?;
        (i < self.catalog.sizes.len()).then_some(i)
    }

    /// Version `j` of a key from a `versionId` (the latest without one).
    fn version(&self, v: Option<&String>) -> Option<usize> {
        match v.map(String::as_str) {
            None | Some("null") | Some("") => Some(self.catalog.versions - 1),
            Some(v) => v
                .strip_prefix('v')?
                .parse()
                .ok()
                .filter(|j| *j < self.catalog.versions),
        }
    }

    fn offset(i: usize) -> usize {
        (i * 7919) % PATTERN_LEN
    }

    /// Serves on `threads` glommio executors sharing one port (SO_REUSEPORT). Returns the
    /// port; the server runs until the process exits.
    pub fn serve(self: &Arc<Self>, threads: usize) -> u16 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..threads {
            let me = self.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("mem-s3-{t}"))
                .spawn(move || {
                    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                        .make()
                        .expect("executor");
                    ex.run(async move {
                        let listener =
                            glommio::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
                        let _ = tx.send(());
                        let watch = std::env::var_os("MEM_S3_WATCH").is_some();
                        if watch {
                            glommio::spawn_local(crate::conn_watch::watch()).detach();
                        }
                        loop {
                            let Ok(stream) = listener.accept().await else {
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                            let me = me.clone();
                            glommio::spawn_local(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    let me = me.clone();
                                    async move { Ok::<_, Infallible>(me.handle(req).await) }
                                });
                                let io = HyperIo::new(Stream::Plain(stream));
                                let mut b = hyper::server::conn::http1::Builder::new();
                                b.writev(true);
                                let _ = if watch {
                                    let w = crate::conn_watch::Watched::new(io, fd);
                                    let st = w.state();
                                    let fut = Box::pin(b.serve_connection(w, svc));
                                    crate::conn_watch::Task { fut, st }.await
                                } else {
                                    b.serve_connection(io, svc).await
                                };
                            })
                            .detach();
                        }
                    });
                })
                .expect("thread");
        }
        for _ in 0..threads {
            rx.recv().expect("server started");
        }
        port
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<MemBody> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = percent_encoding::percent_decode_str(req.uri().path())
            .decode_utf8_lossy()
            .into_owned();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (
                    k.to_string(),
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
            .collect();
        let trimmed = path.trim_start_matches('/');
        let (bucket, key) = match trimmed.split_once('/') {
            Some((b, k)) => (b.to_string(), k.to_string()),
            None => (trimmed.to_string(), String::new()),
        };
        let method = req.method().clone();
        if key.is_empty() {
            return self.bucket_op(&method, &bucket, &query);
        }
        match method.as_str() {
            "HEAD" | "GET" => self.read_object(&method, &bucket, &key, &req),
            "PUT" => self.receive(req, &query, &format!("{bucket}/{key}")).await,
            "POST" if query.contains_key("uploads") => xml(format!(
                "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>mem-{}</UploadId></InitiateMultipartUploadResult>",
                self.requests.load(Ordering::Relaxed)
            )),
            "POST" if query.contains_key("uploadId") => {
                let mut body = req.into_body();
                let mut doc = Vec::new();
                while let Some(Ok(f)) = futures_lite::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    if let Ok(d) = f.into_data() {
                        doc.extend_from_slice(&d);
                    }
                }
                let parts = String::from_utf8_lossy(&doc).matches("<Part>").count();
                self.objects_completed.fetch_add(1, Ordering::Relaxed);
                let size = self.uploads.lock().expect("uploads").remove(&query["uploadId"]).unwrap_or(0);
                let etag = format!("\"mem.{parts}-{parts}\"");
                self.written.lock().expect("written").insert(format!("{bucket}/{key}"), (size, etag.clone()));
                xml(format!("<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>{etag}</ETag></CompleteMultipartUploadResult>"))
            }
            "DELETE" => empty(StatusCode::NO_CONTENT),
            _ => error(StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
        }
    }

    fn bucket_op(
        &self,
        method: &http::Method,
        bucket: &str,
        q: &HashMap<String, String>,
    ) -> Response<MemBody> {
        if method == http::Method::HEAD {
            return empty(StatusCode::OK);
        }
        if q.contains_key("versioning") {
            // Versioned when the catalog has versions (so they are all replicated).
            return xml(if self.catalog.versions > 1 {
                "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>".into()
            } else {
                "<VersioningConfiguration/>".into()
            });
        }
        if q.contains_key("location") {
            return xml("<LocationConstraint/>".into());
        }
        if q.contains_key("replication") {
            return error(
                StatusCode::NOT_FOUND,
                "ReplicationConfigurationNotFoundError",
            );
        }
        if q.contains_key("lifecycle") {
            return error(StatusCode::NOT_FOUND, "NoSuchLifecycleConfiguration");
        }
        let is_source = bucket == self.source_bucket;
        let versions = q.contains_key("versions");
        let nv = self.catalog.versions;
        let count = if is_source {
            self.catalog.sizes.len()
        } else {
            0
        };
        // Positions run over (key, version newest first) for version listings, keys otherwise.
        let per_key = if versions { nv } else { 1 };
        let total = count * per_key;
        let start = match q
            .get("continuation-token")
            .or_else(|| q.get("key-marker"))
            .or_else(|| q.get("start-after"))
            .or_else(|| q.get("marker"))
            .and_then(|m| self.index(m))
        {
            None => 0,
            Some(i) => match q.get("version-id-marker").filter(|_| versions) {
                Some(v) => match self.version(Some(v)) {
                    Some(j) => i * per_key + (nv - 1 - j) + 1,
                    None => (i + 1) * per_key,
                },
                None => (i + 1) * per_key,
            },
        };
        let max: usize = q
            .get("max-keys")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000)
            .min(1000);
        let end = (start + max).min(total);
        let truncated = end < total;
        let mut s = String::with_capacity(256 * (end.saturating_sub(start)) + 256);
        if versions {
            s.push_str("<ListVersionsResult>");
        } else {
            s.push_str("<ListBucketResult>");
        }
        s.push_str(&format!(
            "<Name>{bucket}</Name><IsTruncated>{truncated}</IsTruncated><KeyCount>{}</KeyCount>",
            end.saturating_sub(start)
        ));
        if truncated {
            let last = Catalog::key((end - 1) / per_key);
            if versions {
                let j = nv - 1 - (end - 1) % per_key;
                s.push_str(&format!(
                    "<NextKeyMarker>{last}</NextKeyMarker><NextVersionIdMarker>{}</NextVersionIdMarker>",
                    self.catalog.version_id(j)
                ));
            } else {
                s.push_str(&format!("<NextContinuationToken>{last}</NextContinuationToken><NextMarker>{last}</NextMarker>"));
            }
        }
        for pos in start..end {
            let i = pos / per_key;
            let k = Catalog::key(i);
            let size = self.catalog.sizes[i];
            if versions {
                let j = nv - 1 - pos % per_key;
                s.push_str(&format!(
                    "<Version><Key>{k}</Key><VersionId>{}</VersionId><IsLatest>{}</IsLatest><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"src.{i}.{j}\"</ETag><Size>{size}</Size></Version>",
                    self.catalog.version_id(j),
                    j == nv - 1
                ));
            } else {
                let j = nv - 1;
                s.push_str(&format!(
                    "<Contents><Key>{k}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"src.{i}.{j}\"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
                ));
            }
        }
        s.push_str(if versions {
            "</ListVersionsResult>"
        } else {
            "</ListBucketResult>"
        });
        xml(s)
    }

    fn read_object(
        &self,
        method: &http::Method,
        bucket: &str,
        key: &str,
        req: &Request<Incoming>,
    ) -> Response<MemBody> {
        let vid = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("versionId=").map(str::to_string))
        });
        let found = (bucket == self.source_bucket)
            .then(|| self.index(key))
            .flatten()
            .and_then(|i| Some((i, self.version(vid.as_ref())?)));
        let Some((i, j)) = found else {
            // Destination buckets keep sizes and ETags only.
            if method == http::Method::HEAD {
                if let Some((size, etag)) = self
                    .written
                    .lock()
                    .expect("written")
                    .get(&format!("{bucket}/{key}"))
                    .cloned()
                {
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header("content-length", size)
                        .header("etag", etag)
                        .header("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT")
                        .body(MemBody::Empty { len: size })
                        .expect("response");
                }
                return empty(StatusCode::NOT_FOUND);
            }
            return error(StatusCode::NOT_FOUND, "NoSuchKey");
        };
        let size = self.catalog.sizes[i];
        let (mut start, mut len, mut status) = (0u64, size, StatusCode::OK);
        let mut content_range = None;
        if let Some(r) = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
        {
            if let Some((a, b)) = r.split_once('-') {
                let a: u64 = a.parse().unwrap_or(0);
                let b: u64 = if b.is_empty() {
                    size - 1
                } else {
                    b.parse().unwrap_or(size - 1).min(size - 1)
                };
                start = a;
                len = b + 1 - a;
                status = StatusCode::PARTIAL_CONTENT;
                content_range = Some(format!("bytes {a}-{b}/{size}"));
            }
        }
        let mut resp = Response::builder()
            .status(status)
            .header("content-length", len)
            .header("etag", format!("\"src.{i}.{j}\""))
            .header("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT")
            .header("content-type", "application/octet-stream")
            .header("x-amz-version-id", self.catalog.version_id(j));
        if let Some(cr) = content_range {
            resp = resp.header("content-range", cr);
        }
        let body = if method == http::Method::HEAD {
            MemBody::Empty { len }
        } else {
            let pos = (Self::offset(i * self.catalog.versions + j) + start as usize) % PATTERN_LEN;
            MemBody::Pattern(PatternBody {
                pattern: self.pattern.clone(),
                pos,
                left: len,
            })
        };
        resp.body(body).expect("response")
    }

    async fn receive(
        &self,
        req: Request<Incoming>,
        q: &HashMap<String, String>,
        path: &str,
    ) -> Response<MemBody> {
        let h = req.headers();
        let chunked = h
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.contains("aws-chunked"))
            .unwrap_or(false)
            || h.get("x-amz-content-sha256")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.starts_with("STREAMING-"))
                .unwrap_or(false);
        let header_crc = h
            .get("x-amz-checksum-crc32c")
            .and_then(|v| v.to_str().ok())
            .and_then(backbeat::s3::checksum::decode);
        // `If-None-Match: *`, as S3 does: refused when the key was written (checked once the
        // body is read, as a server that stores the object would).
        let if_absent = h.get("if-none-match").is_some_and(|v| v.as_bytes() == b"*");
        let mut body = req.into_body();
        let mut dec = Decoder::new(chunked);
        let mut got = 0u64;
        loop {
            match futures_lite::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let n = dec.feed(&d);
                        got += n;
                        self.bytes_received.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "IncompleteBody"),
                None => break,
            }
        }
        let expected = header_crc.or(dec.trailer_crc);
        if let Some(e) = expected {
            if e != dec.crc {
                self.checksum_failures.fetch_add(1, Ordering::Relaxed);
                return error(StatusCode::BAD_REQUEST, "BadDigest");
            }
        }
        let etag = format!("\"crc32c.{:08x}\"", dec.crc);
        if if_absent && self.written.lock().expect("written").contains_key(path) {
            return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
        }
        match q.get("uploadId") {
            Some(id) => {
                *self
                    .uploads
                    .lock()
                    .expect("uploads")
                    .entry(id.clone())
                    .or_default() += got
            }
            None => {
                self.objects_completed.fetch_add(1, Ordering::Relaxed);
                self.written
                    .lock()
                    .expect("written")
                    .insert(path.to_string(), (got, etag.clone()));
            }
        }
        Response::builder()
            .status(StatusCode::OK)
            .header("etag", etag)
            .header(
                "x-amz-checksum-crc32c",
                backbeat::s3::checksum::encode(dec.crc),
            )
            .header("content-length", 0)
            .body(MemBody::Empty { len: 0 })
            .expect("response")
    }
}

/// Decodes plain or aws-chunked bodies (signed or not), computing CRC32C of the payload.
struct Decoder {
    chunked: bool,
    crc: u32,
    trailer_crc: Option<u32>,
    /// Bytes of payload left in the current chunk.
    left: usize,
    /// A header or trailer line being assembled.
    line: Vec<u8>,
    state: DState,
}

#[derive(PartialEq)]
enum DState {
    Header,
    Data,
    DataEnd,
    Trailer,
    Done,
}

impl Decoder {
    fn new(chunked: bool) -> Self {
        Self {
            chunked,
            crc: 0,
            trailer_crc: None,
            left: 0,
            line: Vec::new(),
            state: DState::Header,
        }
    }

    /// Returns the payload bytes in `d`.
    fn feed(&mut self, mut d: &[u8]) -> u64 {
        if !self.chunked {
            self.crc = crc32c::crc32c_append(self.crc, d);
            return d.len() as u64;
        }
        let mut payload = 0u64;
        while !d.is_empty() {
            match self.state {
                DState::Data => {
                    let n = self.left.min(d.len());
                    self.crc = crc32c::crc32c_append(self.crc, &d[..n]);
                    payload += n as u64;
                    self.left -= n;
                    d = &d[n..];
                    if self.left == 0 {
                        self.state = DState::DataEnd;
                    }
                }
                DState::Done => break,
                _ => {
                    let Some(nl) = d.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(d);
                        break;
                    };
                    self.line.extend_from_slice(&d[..=nl]);
                    d = &d[nl + 1..];
                    let line = String::from_utf8_lossy(&self.line).trim().to_string();
                    self.line.clear();
                    match self.state {
                        DState::DataEnd => self.state = DState::Header,
                        DState::Header => {
                            let size =
                                usize::from_str_radix(line.split(';').next().unwrap_or("0"), 16)
                                    .unwrap_or(0);
                            if size == 0 {
                                self.state = DState::Trailer;
                            } else {
                                self.left = size;
                                self.state = DState::Data;
                            }
                        }
                        DState::Trailer => {
                            if line.is_empty() {
                                self.state = DState::Done;
                            } else if let Some((k, v)) = line.split_once(':') {
                                if k.trim().eq_ignore_ascii_case("x-amz-checksum-crc32c") {
                                    self.trailer_crc = backbeat::s3::checksum::decode(v.trim());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        payload
    }
}

/// Bytes of the shared pattern, as zero-copy frames.
pub struct PatternBody {
    pattern: Bytes,
    pos: usize,
    left: u64,
}

impl PatternBody {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let n = (self.left as usize).min(FRAME).min(PATTERN_LEN - self.pos);
        let b = self.pattern.slice(self.pos..self.pos + n);
        self.pos = (self.pos + n) % PATTERN_LEN;
        self.left -= n as u64;
        Some(b)
    }
}

pub enum MemBody {
    Pattern(PatternBody),
    Full(Option<Bytes>),
    /// No body (HEAD, or an empty reply); `len` is what Content-Length announces.
    Empty {
        len: u64,
    },
}

impl Body for MemBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(match self.get_mut() {
            MemBody::Pattern(p) => p.next_chunk().map(|b| Ok(Frame::data(b))),
            MemBody::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            MemBody::Empty { .. } => None,
        })
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MemBody::Pattern(p) => SizeHint::with_exact(p.left),
            MemBody::Full(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            MemBody::Empty { len } => {
                let _ = len;
                SizeHint::with_exact(0)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MemBody::Pattern(p) => p.left == 0,
            MemBody::Full(b) => b.is_none(),
            MemBody::Empty { .. } => true,
        }
    }
}

fn xml(s: String) -> Response<MemBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/xml")
        .header("content-length", s.len())
        .body(MemBody::Full(Some(Bytes::from(s))))
        .expect("response")
}

fn empty(status: StatusCode) -> Response<MemBody> {
    Response::builder()
        .status(status)
        .header("content-length", 0)
        .body(MemBody::Empty { len: 0 })
        .expect("response")
}

fn error(status: StatusCode, code: &str) -> Response<MemBody> {
    let s = format!("<Error><Code>{code}</Code><Message>{code}</Message></Error>");
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("content-length", s.len())
        .body(MemBody::Full(Some(Bytes::from(s))))
        .expect("response")
}
