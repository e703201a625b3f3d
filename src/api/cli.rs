//! The command line's side of the API: `backbeat status`, `pause`, `resume`, `failed`.
//! Requests to a running engine's operations API with ureq (blocking, 60 s at most each),
//! reading back the documents of [`super::model`]. `--api` is an address (`127.0.0.1:8900`,
//! plain HTTP) or a URL; an `https://` URL is verified against the system's roots, or
//! against the CA file given. The bearer token is sent, never printed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::model::{
    Done, ErrorBody, FailedItem, FailedPage, Metrics, RetryRequest, ScheduleRequest, Scheduled,
    Schedules, Status, StatusReport,
};

/// The longest a request may take, connection included.
const REQUEST_LIMIT: Duration = Duration::from_secs(60);
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// Characters escaped in a path segment (a site name).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Why a request to the API failed, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the operations API at {addr}: {message} (is the engine running there, `backbeat run`, and is --api its api.listen address?)")]
    Connect { addr: String, message: String },
    #[error("TLS with the operations API at {addr} failed: {message} (for a server whose certificate a private CA signed, pass that CA with --ca-file)")]
    Tls { addr: String, message: String },
    #[error("the operations API at {addr} requires a bearer token (401): pass --token-file with the engine's api.token_file")]
    NoToken { addr: String },
    #[error("the operations API at {addr} refused the token (401): check --token-file, its first line must be the token of the engine's api.token_file")]
    BadToken { addr: String },
    #[error("the operations API at {addr} answered {status}: {message}")]
    Status {
        addr: String,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from the operations API at {addr}: {message}")]
    Bad { addr: String, message: String },
    #[error("cannot use the CA file {path}: {message}")]
    Ca { path: String, message: String },
}

/// A client of one engine's operations API.
pub struct ApiClient {
    /// `http://host:port` or `https://host:port`, without a trailing `/`.
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// The base URL of `api`: a URL as given, an address as plain HTTP.
fn base_url(api: &str) -> String {
    let api = api.trim_end_matches('/');
    if api.starts_with("http://") || api.starts_with("https://") {
        api.to_string()
    } else {
        format!("http://{api}")
    }
}

/// The roots an `https://` API is verified against: the CA file's certificates, or the
/// system's.
fn roots(ca_file: Option<&Path>) -> Result<Vec<ureq::tls::Certificate<'static>>, CliError> {
    let Some(path) = ca_file else {
        let native = rustls_native_certs::load_native_certs().certs;
        return Ok(native
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect());
    };
    let ca = |message: String| CliError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| ca(e.to_string()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(ca("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

impl ApiClient {
    /// A client of the API at `api` (an address or a URL), sending `token` when given.
    pub fn new(api: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self, CliError> {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots(ca_file)?)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_LIMIT))
            .timeout_connect(Some(CONNECT_LIMIT))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(ApiClient {
            base: base_url(api),
            token,
            agent,
        })
    }

    /// Sends one request; reads the JSON document of a 2xx answer.
    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = |r: http::request::Builder| match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        };
        let req = auth(http::Request::builder().method(method).uri(&url));
        let sent = match body {
            Some(b) => {
                let json = serde_json::to_vec(b).expect("API documents serialize");
                let req = req.header("Content-Type", "application/json").body(json);
                self.agent.run(req.map_err(|e| self.bad(e.to_string()))?)
            }
            None => self
                .agent
                .run(req.body(()).map_err(|e| self.bad(e.to_string()))?),
        };
        let mut answer = sent.map_err(|e| self.transport_error(e))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(status, &text));
        }
        serde_json::from_str(&text).map_err(|e| self.bad(format!("{e}: {text}")))
    }

    fn bad(&self, message: String) -> CliError {
        CliError::Bad {
            addr: self.base.clone(),
            message,
        }
    }

    fn transport_error(&self, e: ureq::Error) -> CliError {
        let addr = self.base.clone();
        match e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => CliError::Tls {
                addr,
                message: e.to_string(),
            },
            // A handshake refused while reading or writing comes as an I/O error.
            ureq::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
                CliError::Tls {
                    addr,
                    message: io.to_string(),
                }
            }
            ureq::Error::Timeout(_) => CliError::Connect {
                addr,
                message: format!("no answer within {} s ({e})", REQUEST_LIMIT.as_secs()),
            },
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => CliError::Connect {
                addr,
                message: format!("not an address such as 127.0.0.1:8900 or a URL ({e})"),
            },
            e => CliError::Connect {
                addr,
                message: e.to_string(),
            },
        }
    }

    fn status_error(&self, status: u16, text: &str) -> CliError {
        let addr = self.base.clone();
        if status == 401 {
            return match self.token {
                None => CliError::NoToken { addr },
                Some(_) => CliError::BadToken { addr },
            };
        }
        let message = serde_json::from_str::<ErrorBody>(text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.chars().take(200).collect());
        CliError::Status {
            addr,
            status,
            message,
        }
    }

    /// Each site's state (`GET /_/crr/status`) and metrics (`GET /_/metrics/crr/{site}/all`).
    pub fn status(&self) -> Result<StatusReport, CliError> {
        let status: Status = self.request("GET", "/_/crr/status", None::<&()>)?;
        let mut report = StatusReport::default();
        for site in status.keys() {
            let path = format!("/_/metrics/crr/{}/all", segment(site));
            let m: Metrics = self.request("GET", &path, None::<&()>)?;
            report.metrics.insert(site.clone(), m);
        }
        report.status = status;
        Ok(report)
    }

    /// Pauses (`pause`) or resumes a site, or every site with `all`.
    pub fn pause(&self, site: &str, pause: bool) -> Result<(), CliError> {
        let op = if pause { "pause" } else { "resume" };
        let path = match site {
            "all" => format!("/_/crr/{op}"),
            s => format!("/_/crr/{op}/{}", segment(s)),
        };
        self.request::<Done>("POST", &path, None::<&()>).map(|_| ())
    }

    /// Pauses a site now and resumes it in `hours`; returns when.
    pub fn schedule_resume(&self, site: &str, hours: f64) -> Result<Scheduled, CliError> {
        let path = format!("/_/crr/resume/{}/schedule", segment(site));
        self.request("POST", &path, Some(&ScheduleRequest { hours }))
    }

    /// Lifecycle's state as a whole (`lifecycle`) and for its transitions to each site
    /// (`GET /_/lifecycle/status`), with their scheduled resumes (`none` when there is none).
    pub fn lifecycle_status(&self) -> Result<(Status, Schedules), CliError> {
        let status: Status = self.request("GET", "/_/lifecycle/status", None::<&()>)?;
        let at: Schedules = self.request("GET", "/_/lifecycle/resume", None::<&()>)?;
        Ok((status, at))
    }

    /// Pauses (`pause`) or resumes lifecycle (`all`), or its transitions to a site.
    pub fn lifecycle_pause(&self, site: &str, pause: bool) -> Result<(), CliError> {
        let op = if pause { "pause" } else { "resume" };
        let path = format!("/_/lifecycle/{op}/{}", segment(site));
        self.request::<Done>("POST", &path, None::<&()>).map(|_| ())
    }

    /// Ingestion's state per bucket (`all`, or one bucket) and this node's pass figures.
    pub fn ingestion_status(&self, bucket: &str) -> Result<super::model::Ingestion, CliError> {
        let path = format!("/_/ingestion/status/{}", segment(bucket));
        self.request("GET", &path, None::<&()>)
    }

    /// Pauses (`pause`) or resumes the ingestion of a bucket (`all`: every one).
    pub fn ingestion_pause(&self, bucket: &str, pause: bool) -> Result<(), CliError> {
        let op = if pause { "pause" } else { "resume" };
        let path = format!("/_/ingestion/{op}/{}", segment(bucket));
        self.request::<serde_json::Value>("POST", &path, None::<&()>)
            .map(|_| ())
    }

    /// The known source buckets with their site buckets and figures (`GET /_/buckets`).
    pub fn buckets(&self) -> Result<super::model::Buckets, CliError> {
        self.request("GET", "/_/buckets", None::<&()>)
    }

    /// Pauses lifecycle (`all`, or a site's transitions) now and resumes it in `hours`.
    pub fn lifecycle_schedule(&self, site: &str, hours: f64) -> Result<Scheduled, CliError> {
        let path = format!("/_/lifecycle/resume/{}/schedule", segment(site));
        self.request("POST", &path, Some(&ScheduleRequest { hours }))
    }

    /// Every failed entry (of one site with `site`), following the pages.
    pub fn failed(&self, site: Option<&str>) -> Result<Vec<FailedItem>, CliError> {
        let mut out = Vec::new();
        self.each_failed_page(site, |page| {
            out.extend_from_slice(page);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each page of failed entries (of one site with `site`), in key order.
    pub fn each_failed_page(
        &self,
        site: Option<&str>,
        mut f: impl FnMut(&[FailedItem]) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            site: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            marker: Option<&'a str>,
        }
        let mut marker: Option<String> = None;
        loop {
            let q = Query {
                site,
                marker: marker.as_deref(),
            };
            // The API reads `+` as itself: spaces go as %20.
            let q = serde_urlencoded::to_string(&q)
                .expect("a query of strings")
                .replace('+', "%20");
            let path = match q.as_str() {
                "" => "/_/crr/failed".to_string(),
                q => format!("/_/crr/failed?{q}"),
            };
            let page: FailedPage = self.request("GET", &path, None::<&()>)?;
            f(&page.versions)?;
            match (page.is_truncated, page.next_marker) {
                (true, Some(m)) => marker = Some(m),
                _ => return Ok(()),
            }
        }
    }

    /// Queues `items` again; returns those queued.
    pub fn retry(&self, items: &[FailedItem]) -> Result<Vec<FailedItem>, CliError> {
        let wanted: Vec<RetryRequest> = items.iter().map(RetryRequest::from).collect();
        self.request("POST", "/_/crr/failed", Some(&wanted))
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A readable table of each site's state and metrics.
pub fn status_table(report: &StatusReport) -> String {
    let mut out = format!(
        "{:<16} {:<9} {:>9} {:>12} {:>10} {:>9} {:>14} {:>14}\n",
        "site",
        "state",
        "backlog",
        "completions",
        "failures",
        "pending",
        "throughput/s",
        "bandwidth"
    );
    for (site, state) in &report.status {
        let m = report.metrics.get(site);
        let count = |f: Option<u64>| f.map_or("?".to_string(), |c| c.to_string());
        let state = serde_json::to_value(state).expect("a state");
        let bandwidth = m
            .and_then(|m| m.bandwidth.as_ref())
            .map_or("none".into(), |b| {
                crate::bandwidth::show_rate(b.bytes_per_second)
            });
        out.push_str(&format!(
            "{:<16} {:<9} {:>9} {:>12} {:>10} {:>9} {:>14} {:>14}\n",
            site,
            state.as_str().unwrap_or("?"),
            count(m.and_then(|m| m.backlog.as_ref()).map(|f| f.results.count)),
            count(
                m.and_then(|m| m.completions.as_ref())
                    .map(|f| f.results.count)
            ),
            count(m.and_then(|m| m.failures.as_ref()).map(|f| f.results.count)),
            count(m.and_then(|m| m.pending.as_ref()).map(|f| f.results.count)),
            m.and_then(|m| m.throughput.as_ref())
                .map_or("?", |f| f.results.count.as_str()),
            bandwidth,
        ));
    }
    out
}

/// A readable table of failed entries, and their number.
/// `backbeat ingestion status`: a line per bucket, its pass's progress and ETA.
pub fn ingestion_table(doc: &super::model::Ingestion) -> String {
    let mut out = String::new();
    if !doc.leader {
        out.push_str("(this node runs no ingestion pass: another node holds ingestion)\n");
    }
    for (b, i) in &doc.buckets {
        let mut line = format!("{b}: {}", i.control);
        if let Some(p) = &i.pass {
            let pct = p
                .fraction
                .map_or("?".into(), |f| format!("{:.0}%", f * 100.0));
            let eta = p
                .eta_seconds
                .map_or(String::new(), |s| format!(", ETA {s} s"));
            line.push_str(&format!(
                ", {} (pass {}): {} keys listed in {} requests, {} enqueued, {pct}{eta}",
                p.state, p.pass, p.keys, p.pages, p.enqueued
            ));
            if let Some(e) = &p.error {
                line.push_str(&format!(", error: {e}"));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `backbeat buckets`: a line per source bucket and site.
pub fn buckets_table(doc: &super::model::Buckets) -> String {
    let mut out = format!(
        "{} source buckets known; {} adopted here, {} adoptions failed\n",
        doc.known, doc.adopted, doc.adoption_failures
    );
    for (b, d) in &doc.buckets {
        for (site, at) in &d.sites {
            out.push_str(&format!(
                "{b} -> {site}:{}  {} completed, {} bytes, {} failed\n",
                at.bucket, at.completed, at.bytes, at.failed
            ));
        }
        if let Some(e) = d.adoption.as_ref().and_then(|a| a.error.as_ref()) {
            out.push_str(&format!("{b}: not adopted: {e}\n"));
        }
    }
    out
}

pub fn failed_table(items: &[FailedItem]) -> String {
    let mut out = format!(
        "{:<10} {:<20} {:<40} {:<24} error\n",
        "site", "bucket", "key", "version"
    );
    for v in items {
        out.push_str(&format!(
            "{:<10} {:<20} {:<40} {:<24} {}\n",
            v.storage_class,
            v.bucket,
            v.key,
            v.version_id,
            v.error.as_ref().map_or("", |e| e.code.as_str())
        ));
    }
    out.push_str(&format!("{} failed\n", items.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_plain_http_and_urls_are_kept() {
        assert_eq!(base_url("127.0.0.1:8900"), "http://127.0.0.1:8900");
        assert_eq!(
            base_url("https://api.example:8900/"),
            "https://api.example:8900"
        );
        assert_eq!(segment("site b/c"), "site%20b%2Fc");
    }

    #[test]
    fn the_token_is_never_shown() {
        let c = ApiClient::new("127.0.0.1:1", Some("s3cr3t".into()), None).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = c.status().unwrap_err();
        assert!(matches!(e, CliError::Connect { .. }), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
