//! The S3 client of one shard: builds, signs and sends requests to one endpoint, turns
//! error responses into [`RequestError`]s, and reports each request to a telemetry callback
//! (the client itself records no metrics).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::ServerName;

use super::error::RequestError;
use super::http::{ConnectSpec, Pool};
use super::http::{ReqBody, RespBody};
use super::signing::{Credentials, Payload, Signer};

/// Characters of a key kept as they are in a URI path: RFC 3986 unreserved and `/`.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// Characters kept as they are in a query value.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a PUT carries its CRC32C when the checksum is not known before the upload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumTransport {
    /// aws-chunked body with an `x-amz-checksum-crc32c` trailer (AWS, moto, garage).
    Trailer,
    /// Only send the checksum as a header when known upfront; otherwise the destination's
    /// stored checksum is read back and compared.
    Header,
}

/// Everything needed to talk to one S3 endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub region: String,
    /// Path-style (`host/bucket/key`) or virtual-hosted (`bucket.host/key`).
    pub path_style: bool,
    pub credentials: Credentials,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    pub checksum: ChecksumTransport,
    /// Read back what was written when the ETag cannot prove it (multipart copies with a new
    /// part layout): for servers that store a client's CRC32C without checking it.
    pub verify_after_write: bool,
    /// Connect to this address whatever the host name resolves to (like curl's --resolve).
    pub connect_to: Option<std::net::SocketAddr>,
    pub connect_timeout: Duration,
    /// A request waiting on the endpoint with no byte moved for this long fails.
    pub io_idle_timeout: Duration,
    /// Bytes per second a request waiting on the endpoint must at least see (0: no guard).
    pub min_rate: u64,
    /// A request lasting longer than this fails, even one that keeps moving (none: no limit).
    pub request_deadline: Option<Duration>,
    pub idle_timeout: Duration,
    /// Read buffer of each connection (the largest frame moved at once).
    pub read_buffer: usize,
    /// SO_SNDBUF/SO_RCVBUF of each connection; `None` keeps the kernel's autotuning.
    pub socket_buffer: Option<usize>,
    /// SSE-C keys sent with the requests that read or write objects' bytes.
    pub customer_keys: super::customer_key::CustomerKeys,
}

impl EndpointConfig {
    pub fn new(url: &str, region: &str, credentials: Credentials) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            region: region.to_string(),
            path_style: true,
            credentials,
            ca_file: None,
            checksum: ChecksumTransport::Trailer,
            connect_to: None,
            verify_after_write: false,
            connect_timeout: Duration::from_secs(5),
            io_idle_timeout: Duration::from_secs(60),
            min_rate: 0,
            request_deadline: None,
            idle_timeout: Duration::from_secs(30),
            read_buffer: 256 * 1024,
            socket_buffer: None,
            customer_keys: Default::default(),
        }
    }
}

/// Why an endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint URL {url:?} is invalid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot load CA file {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// A resolved endpoint, shared by every shard (`Send + Sync`).
#[derive(Debug)]
pub struct Endpoint {
    pub config: EndpointConfig,
    scheme_https: bool,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Checks an endpoint URL: http or https, a host, no path or query, no credentials in it
/// (the error shows the URL with any credentials masked).
pub fn check_url(s: &str) -> Result<(), String> {
    let shown = redact_url(s);
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return Err(format!("{shown:?} must start with http:// or https://"));
    };
    // User information may hold a '/' (AWS secret keys do): any '@' before the query is it.
    let before_query = rest.split(['?', '#']).next().unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if before_query.contains('@') {
        return Err(format!(
            "{shown:?} carries credentials: put them in an AWS profile (the endpoint's \
             `profile`) or the environment, never in the URL"
        ));
    }
    let uri: http::Uri = match s.parse() {
        Ok(u) => u,
        Err(_) if authority.is_empty() => return Err(format!("{shown:?} has no host")),
        Err(_) => return Err(format!("{shown:?} is not a URL")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{shown:?} must name a host and port only, no path or query (buckets are \
             configured apart)"
        ));
    }
    Ok(())
}

/// `s` with any user information (`user:secret@`) of its authority replaced by `***@`, so
/// an error can show a URL without showing credentials.
pub fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    // Up to the query: user information may hold a '/' (AWS secret keys do).
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => s.to_string(),
    }
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Result<Arc<Self>, EndpointError> {
        let bad = |reason: &str| EndpointError::BadUrl {
            url: redact_url(&config.url),
            reason: reason.into(),
        };
        if let Err(reason) = check_url(&config.url) {
            return Err(EndpointError::BadUrl {
                url: redact_url(&config.url),
                reason,
            });
        }
        let uri: http::Uri = config.url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("must not have a path"));
        }
        let tls = if https {
            Some(Arc::new(tls_config(config.ca_file.as_deref())?))
        } else {
            None
        };
        Ok(Arc::new(Self {
            config,
            scheme_https: https,
            host,
            port,
            tls,
        }))
    }

    /// The host, with the port when it is not the scheme's default.
    pub fn site(&self) -> String {
        let default = if self.scheme_https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// `host:port` as shown to users.
    pub fn label(&self) -> &str {
        &self.config.url
    }

    fn host_for(&self, bucket: &str) -> String {
        if self.config.path_style || bucket.is_empty() {
            self.host.clone()
        } else {
            format!("{bucket}.{}", self.host)
        }
    }

    fn connect_spec(&self, host: &str) -> Result<ConnectSpec, RequestError> {
        let addrs: Vec<_> = match self.config.connect_to {
            Some(a) => vec![a],
            None => (host, self.port)
                .to_socket_addrs()
                .map_err(|e| RequestError::Connect {
                    endpoint: self.config.url.clone(),
                    message: format!("cannot resolve {host}: {e}"),
                })?
                .collect(),
        };
        let tls = match &self.tls {
            Some(cfg) => {
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    RequestError::InvalidRequest(format!("bad TLS server name {host}: {e}"))
                })?;
                Some((cfg.clone(), name))
            }
            None => None,
        };
        Ok(ConnectSpec {
            addrs,
            tls,
            connect_timeout: self.config.connect_timeout,
            io_idle_timeout: self.config.io_idle_timeout,
            min_rate: self.config.min_rate,
            request_deadline: self.config.request_deadline,
            idle_timeout: self.config.idle_timeout,
            max_idle: 256,
            read_buffer: self.config.read_buffer,
            socket_buffer: self.config.socket_buffer,
            label: self.config.url.clone(),
        })
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, EndpointError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let err = |reason: String| EndpointError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert.map_err(|e| err(e.to_string()))?)
                    .map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no certificate in file".into()));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EndpointError::Ca {
            path: "(TLS setup)".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// What the client tells its owner about each request.
#[derive(Debug, Clone)]
pub struct RequestEvent {
    pub operation: &'static str,
    pub status: Option<u16>,
    pub duration: Duration,
}

pub type Telemetry = Rc<dyn Fn(&RequestEvent)>;

/// One request, before signing.
pub(crate) struct Req<'a> {
    pub method: Method,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
    /// Query parameters; an empty value is sent as a bare name (`?versioning`).
    pub query: Vec<(&'static str, String)>,
    pub headers: HeaderMap,
    pub body: ReqBody,
    pub payload: Payload<'static>,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, bucket: &'a str, key: Option<&'a str>) -> Self {
        Self {
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            payload: Payload::Unsigned,
        }
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, RequestError> {
        let v = HeaderValue::from_str(value).map_err(|_| {
            RequestError::InvalidRequest(format!("invalid value for header {name}"))
        })?;
        self.headers.append(HeaderName::from_static(name), v);
        Ok(self)
    }

    pub fn header_dyn(mut self, name: &str, value: &str) -> Result<Self, RequestError> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| RequestError::InvalidRequest(format!("invalid header name {name}")))?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            RequestError::InvalidRequest(format!("invalid value for header {name}"))
        })?;
        self.headers.append(n, v);
        Ok(self)
    }

    pub fn body(mut self, body: ReqBody) -> Self {
        self.body = body;
        self
    }
}

/// A response whose status was 2xx (or 3xx/4xx the operation asked to see).
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: RespBody,
}

/// The S3 client of one shard for one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    endpoint: Arc<Endpoint>,
    signer: Signer,
    pools: RefCell<HashMap<String, Rc<Pool>>>,
    telemetry: Option<Telemetry>,
}

/// Encodes a key for a URI path.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_SET).to_string()
}

impl Client {
    pub fn new(endpoint: Arc<Endpoint>, telemetry: Option<Telemetry>) -> Self {
        let signer = Signer::new(&endpoint.config.credentials, &endpoint.config.region);
        Self {
            inner: Rc::new(Inner {
                endpoint,
                signer,
                pools: RefCell::default(),
                telemetry,
            }),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.inner.endpoint
    }

    fn pool(&self, host: &str) -> Result<Rc<Pool>, RequestError> {
        if let Some(p) = self.inner.pools.borrow().get(host) {
            return Ok(p.clone());
        }
        let pool = Pool::new(self.inner.endpoint.connect_spec(host)?);
        self.inner
            .pools
            .borrow_mut()
            .insert(host.to_string(), pool.clone());
        Ok(pool)
    }

    fn build(
        &self,
        req: &Req<'_>,
        host: &str,
        body: ReqBody,
    ) -> Result<http::Request<ReqBody>, RequestError> {
        let ep = &self.inner.endpoint;
        let mut path = String::with_capacity(64);
        path.push('/');
        if ep.config.path_style && !req.bucket.is_empty() {
            path.push_str(req.bucket);
            if let Some(key) = req.key {
                path.push('/');
                path.push_str(&encode_key(key));
            }
        } else if let Some(key) = req.key {
            path.push_str(&encode_key(key));
        }
        if !req.query.is_empty() {
            path.push('?');
            for (i, (k, v)) in req.query.iter().enumerate() {
                if i > 0 {
                    path.push('&');
                }
                path.push_str(k);
                if !v.is_empty() {
                    path.push('=');
                    path.push_str(&utf8_percent_encode(v, QUERY_SET).to_string());
                }
            }
        }
        let mut r = http::Request::builder()
            .method(req.method.clone())
            .uri(path)
            .body(body)
            .map_err(|e| RequestError::InvalidRequest(e.to_string()))?;
        let host_header =
            if (ep.scheme_https && ep.port == 443) || (!ep.scheme_https && ep.port == 80) {
                host.to_string()
            } else if host.contains(':') {
                format!("[{host}]:{}", ep.port)
            } else {
                format!("{host}:{}", ep.port)
            };
        r.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_str(&host_header)
                .map_err(|e| RequestError::InvalidRequest(e.to_string()))?,
        );
        for (k, v) in req.headers.iter() {
            r.headers_mut().append(k.clone(), v.clone());
        }
        self.inner
            .signer
            .sign(&mut r, req.payload, SystemTime::now())?;
        Ok(r)
    }

    /// Sends a request. Non-2xx responses become [`RequestError::Service`], except the
    /// statuses listed in `pass`, which are returned for the operation to interpret.
    /// With debug logging on, the request runs in a span naming the operation, bucket and key
    /// (its events, and those of the connection, carry them); otherwise no span is built,
    /// which keeps small objects' per-request cost at what it was before spans.
    pub(crate) async fn send(
        &self,
        op: &'static str,
        req: Req<'_>,
        pass: &[u16],
    ) -> Result<Resp, RequestError> {
        use tracing::Instrument;
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return self.send_in_span(op, req, pass).await;
        }
        let span = tracing::debug_span!("s3_request", op, bucket = req.bucket, key = req.key);
        self.send_in_span(op, req, pass).instrument(span).await
    }

    async fn send_in_span(
        &self,
        op: &'static str,
        mut req: Req<'_>,
        pass: &[u16],
    ) -> Result<Resp, RequestError> {
        let keys = &self.inner.endpoint.config.customer_keys;
        if let Some(k) = keys.for_bucket(req.bucket).and_then(|k| k.headers(op)) {
            for (name, value) in k {
                req = req.header(name, value)?;
            }
        }
        let start = Instant::now();
        let host = self.inner.endpoint.host_for(req.bucket);
        let pool = self.pool(&host)?;
        let replayable = !matches!(req.body, ReqBody::Stream(_));
        let mut fresh = false;
        let result = loop {
            let body = match &mut req.body {
                ReqBody::Full(b) => ReqBody::Full(b.clone()),
                ReqBody::Empty => ReqBody::Empty,
                ReqBody::Stream(_) => std::mem::replace(&mut req.body, ReqBody::Empty),
            };
            let request = self.build(&req, &host, body)?;
            let mut conn = pool.acquire(fresh).await?;
            match conn.link.sender.send_request(request).await {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    break Ok((parts, RespBody::new(incoming, pool.clone(), conn.link)));
                }
                Err(e) => {
                    // A pooled connection the server had closed: once more on a new one.
                    if conn.reused && replayable && !fresh {
                        fresh = true;
                        continue;
                    }
                    break Err(super::http::request_error(e));
                }
            }
        };
        let (parts, body) = match result {
            Ok(r) => r,
            Err(e) => {
                self.report(op, None, start);
                return Err(e);
            }
        };
        let status = parts.status.as_u16();
        self.report(op, Some(status), start);
        if (200..300).contains(&status) || pass.contains(&status) {
            return Ok(Resp {
                status,
                headers: parts.headers,
                body,
            });
        }
        let request_id = parts
            .headers
            .get("x-amz-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = body.collect(64 * 1024).await.unwrap_or_default();
        Err(RequestError::from_response(status, &bytes, &request_id))
    }

    fn report(&self, operation: &'static str, status: Option<u16>, start: Instant) {
        tracing::trace!(
            status,
            elapsed_us = start.elapsed().as_micros() as u64,
            "response"
        );
        if let Some(t) = &self.inner.telemetry {
            t(&RequestEvent {
                operation,
                status,
                duration: start.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding() {
        assert_eq!(encode_key("a b+c%d?e#f//g"), "a%20b%2Bc%25d%3Fe%23f//g");
        assert_eq!(encode_key("é/ü~-._"), "%C3%A9/%C3%BC~-._");
    }
}
