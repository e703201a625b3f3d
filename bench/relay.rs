//! The loopback limit: a plain socket relay that moves the same bytes from the source
//! endpoint to the destination endpoint with as little work as a mover can do. Per object it
//! writes a fixed GET request, finds the end of the response head and its length, writes a
//! fixed PUT head, then copies the body from one socket to the other through one reused
//! buffer: no signing, no checksums, no HTTP library, no listing. Whatever this reaches on a
//! machine is the ceiling for any mover against the same endpoint.
//!
//! It runs as `backbeat-bench relay ...` in a process of its own, so its CPU time is measured
//! the way the movers' is.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::mem_s3::Catalog;

/// One connection to the endpoint, with its read buffer.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// Bytes in `buf` not consumed yet: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    fn open(addr: &str) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Self {
            s,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
        })
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.s.read(&mut self.buf[self.end..])?;
        if n == 0 {
            bail!("the endpoint closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// Reads a response head; returns (status, content-length).
    fn head(&mut self) -> anyhow::Result<(u16, u64)> {
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&data[..i]).context("response head")?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("status line")?;
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                self.start += i + 4;
                return Ok((status, len));
            }
            self.fill()?;
        }
    }

    /// Copies `len` body bytes to `out`.
    fn copy_body(&mut self, mut len: u64, out: &mut TcpStream) -> anyhow::Result<()> {
        while len > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let n = ((self.end - self.start) as u64).min(len) as usize;
            out.write_all(&self.buf[self.start..self.start + n])?;
            self.start += n;
            len -= n as u64;
        }
        Ok(())
    }

    /// Drops `len` body bytes.
    fn skip(&mut self, mut len: u64) -> anyhow::Result<()> {
        while len > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let n = ((self.end - self.start) as u64).min(len) as usize;
            self.start += n;
            len -= n as u64;
        }
        Ok(())
    }
}

/// What the relay reports on stdout (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RelayReport {
    pub objects: usize,
    pub bytes: u64,
    /// (quantile, milliseconds) of per-object time, GET sent to PUT answered.
    pub latency_cdf_ms: Vec<[f64; 2]>,
}

/// Relays every object of `catalog` from `src_bucket` to `dst_bucket` at `addr` with
/// `workers` threads, each with one GET and one PUT connection.
pub fn run(
    addr: &str,
    src_bucket: &str,
    dst_bucket: &str,
    catalog: &Catalog,
    workers: usize,
) -> anyhow::Result<RelayReport> {
    let total = catalog.objects();
    let next = Arc::new(AtomicUsize::new(0));
    let hist = Arc::new(Mutex::new(backbeat::metrics::latency_histogram()));
    let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers.max(1).min(total.max(1)) {
            let (next, hist, moved) = (next.clone(), hist.clone(), moved.clone());
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut get = Conn::open(addr)?;
                let mut put = Conn::open(addr)?;
                let mut local = backbeat::metrics::latency_histogram();
                let mut req = String::with_capacity(256);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let (i, j) = (n / catalog.versions, n % catalog.versions);
                    let key = Catalog::key(i);
                    let vid = catalog.version_id(j);
                    let t = Instant::now();
                    req.clear();
                    req.push_str("GET /");
                    req.push_str(src_bucket);
                    req.push('/');
                    req.push_str(&key);
                    req.push_str("?versionId=");
                    req.push_str(&vid);
                    req.push_str(" HTTP/1.1\r\nHost: relay\r\n\r\n");
                    get.s.write_all(req.as_bytes())?;
                    let (status, len) = get.head()?;
                    if status != 200 {
                        bail!("GET {key}: status {status}");
                    }
                    req.clear();
                    req.push_str("PUT /");
                    req.push_str(dst_bucket);
                    req.push('/');
                    req.push_str(&key);
                    req.push_str(" HTTP/1.1\r\nHost: relay\r\nContent-Length: ");
                    req.push_str(&len.to_string());
                    req.push_str("\r\n\r\n");
                    put.s.write_all(req.as_bytes())?;
                    get.copy_body(len, &mut put.s)?;
                    let (status, rlen) = put.head()?;
                    put.skip(rlen)?;
                    if status != 200 {
                        bail!("PUT {key}: status {status}");
                    }
                    moved.fetch_add(len, Ordering::Relaxed);
                    local.saturating_record(t.elapsed().as_micros().max(1) as u64);
                }
                let _ = hist.lock().expect("histogram").add(&local);
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("relay worker panicked"))??;
        }
        Ok(())
    })?;
    let h = hist.lock().expect("histogram");
    Ok(RelayReport {
        objects: total,
        bytes: moved.load(Ordering::Relaxed),
        latency_cdf_ms: backbeat::metrics::cdf_ms(&h),
    })
}
