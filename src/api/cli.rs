//! The command line's side of the API: `backbeat status`, `pause`, `resume`. Plain
//! HTTP/1.1 requests to a running engine's operations API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the operations API at {addr}: {message} (is `backbeat run` running, and --api right?)")]
    Connect { addr: String, message: String },
    #[error("the API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from the API: {0}")]
    Bad(String),
}

/// Sends one request; returns the JSON body of a 2xx answer.
pub fn request(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<serde_json::Value, CliError> {
    let connect = |m: String| CliError::Connect {
        addr: addr.to_string(),
        message: m,
    };
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| connect("not an address such as 127.0.0.1:8900".into()))?;
    let mut c = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| connect(e.to_string()))?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| connect(e.to_string()))?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)
        .map_err(|e| connect(e.to_string()))?;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Bad(text.chars().take(200).collect()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err(CliError::Status { status, body });
    }
    serde_json::from_str(&body).map_err(|e| CliError::Bad(format!("{e}: {body}")))
}

/// A readable table of each site's state and metrics.
pub fn status_table(
    status: &serde_json::Value,
    metrics: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut out = format!(
        "{:<16} {:<9} {:>9} {:>12} {:>10} {:>9} {:>14}\n",
        "site", "state", "backlog", "completions", "failures", "pending", "throughput/s"
    );
    if let Some(sites) = status.as_object() {
        for (site, state) in sites {
            let m = &metrics[site];
            let r = |k: &str, f: &str| m[k]["results"][f].to_string().trim_matches('"').to_string();
            out.push_str(&format!(
                "{:<16} {:<9} {:>9} {:>12} {:>10} {:>9} {:>14}\n",
                site,
                state.as_str().unwrap_or("?"),
                r("backlog", "count"),
                r("completions", "count"),
                r("failures", "count"),
                r("pending", "count"),
                r("throughput", "count"),
            ));
        }
    }
    out
}
