//! A fault-injecting TCP proxy in front of a real S3 server, optionally terminating TLS with
//! a certificate from a self-signed CA. It frames HTTP/1.1 requests (Content-Length bodies)
//! so that it can flip a body byte, answer 503 SlowDown, or reset the connection for chosen
//! requests, and passes everything else through unchanged.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

/// What to do to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Flip one bit of the body byte at offset 40 (requests with a body of at least 64 bytes).
    FlipByte,
    /// Answer `503 SlowDown` without forwarding.
    SlowDown,
    /// Answer `403 AccessDenied` without forwarding.
    Forbidden,
    /// Reset the connection (RST) instead of forwarding.
    Reset,
    /// Forward the first MiB of the body, then hold the rest until [`Faults::release`].
    Hold,
    /// Forward the request, and its answer one byte every 250 ms (a server that trickles).
    Drip,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    /// Only requests whose target contains this.
    pub path_contains: Option<String>,
    pub kind: Kind,
    pub remaining: u32,
}

#[derive(Default)]
pub struct Faults {
    list: Mutex<Vec<Fault>>,
    /// Request lines seen, and whether a fault hit them.
    pub log: Mutex<Vec<(String, Option<Kind>)>>,
    /// Set to let held bodies through.
    released: std::sync::atomic::AtomicBool,
    /// Client connections accepted.
    pub connections: std::sync::atomic::AtomicUsize,
    /// When set: request bodies are forwarded at most this many bytes per second (a slow
    /// link towards the server).
    pub throttle_up: std::sync::atomic::AtomicU64,
    /// When set: the server is down: every request's connection is reset.
    pub down: AtomicBool,
    /// The pause between two bytes of a dripped answer, in ms (0: 250 ms).
    pub drip_every_ms: std::sync::atomic::AtomicU64,
    /// When set, (bucket, key base64, key MD5 base64): requests reading or writing the
    /// bucket's objects' bytes must carry that SSE-C key, as a server enforcing SSE-C
    /// would; the proxy answers 400 InvalidRequest without one and 403 AccessDenied with
    /// another (and passes the request on, headers and all, when it is right).
    pub customer_key: Mutex<Option<(String, String, String)>>,
    /// Requests checked for the SSE-C key, and those refused.
    pub customer_checked: AtomicUsize,
    pub customer_refused: AtomicUsize,
}

impl Faults {
    pub fn add(&self, method: &'static str, path_contains: Option<&str>, kind: Kind, times: u32) {
        self.list.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.map(str::to_string),
            kind,
            remaining: times,
        });
    }

    /// Lets every held body (and later ones) through.
    pub fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn hits(&self, kind: Kind) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k)| *k == Some(kind))
            .count()
    }

    /// The answer to a request that lacks the SSE-C key its bucket requires (see
    /// [`Faults::customer_key`]).
    fn customer_refusal(
        &self,
        method: &str,
        target: &str,
        head: &str,
    ) -> Option<(&'static str, &'static str)> {
        let guard = self.customer_key.lock().unwrap();
        let (bucket, key, md5) = guard.as_ref()?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let object = path
            .strip_prefix(&format!("/{bucket}/"))
            .is_some_and(|k| !k.is_empty());
        let has = |q: &str| {
            query
                .split('&')
                .any(|p| p == q || p.starts_with(&format!("{q}=")))
        };
        let bytes = match method {
            "GET" | "HEAD" => !["tagging", "acl", "retention", "legal-hold", "uploadId"]
                .iter()
                .any(|q| has(q)),
            "PUT" => !["tagging", "acl", "retention", "legal-hold"]
                .iter()
                .any(|q| has(q)),
            "POST" => has("uploads"),
            _ => false,
        };
        if !object || !bytes {
            return None;
        }
        self.customer_checked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let algorithm = header("x-amz-server-side-encryption-customer-algorithm");
        let given = header("x-amz-server-side-encryption-customer-key");
        let given_md5 = header("x-amz-server-side-encryption-customer-key-md5");
        let refusal = match (algorithm.as_deref(), given, given_md5) {
            (Some("AES256"), Some(k), Some(m)) if &k == key && &m == md5 => return None,
            (Some(_), Some(_), Some(_)) => ("403 Forbidden", "AccessDenied"),
            _ => ("400 Bad Request", "InvalidRequest"),
        };
        self.customer_refused
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(refusal)
    }

    fn take(&self, method: &str, target: &str, body_len: usize) -> Option<Kind> {
        let mut list = self.list.lock().unwrap();
        for f in list.iter_mut() {
            if f.remaining == 0 || f.method != method {
                continue;
            }
            if let Some(p) = &f.path_contains {
                if !target.contains(p.as_str()) {
                    continue;
                }
            }
            if f.kind == Kind::FlipByte && body_len < 64 {
                continue;
            }
            f.remaining -= 1;
            return Some(f.kind);
        }
        None
    }
}

pub struct Proxy {
    pub url: String,
    pub faults: Arc<Faults>,
    /// PEM of the CA that signed the proxy's certificate (TLS mode).
    pub ca_pem: Option<String>,
}

/// The client side of a proxied connection: plain or TLS, readable and writable from two
/// threads.
#[derive(Clone)]
enum Side {
    Plain(Arc<TcpStream>),
    /// The socket, the TLS state, and received TLS bytes not yet consumed by rustls.
    Tls(
        Arc<TcpStream>,
        Arc<Mutex<rustls::ServerConnection>>,
        Arc<Mutex<Vec<u8>>>,
    ),
}

impl Side {
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Side::Plain(s) => (&**s).read(buf),
            Side::Tls(sock, conn, pending) => loop {
                {
                    let mut c = conn.lock().unwrap();
                    match c.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    let mut p = pending.lock().unwrap();
                    if !p.is_empty() {
                        let mut slice: &[u8] = &p;
                        c.read_tls(&mut slice)?;
                        let used = p.len() - slice.len();
                        p.drain(..used);
                        c.process_new_packets()
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        while c.wants_write() {
                            c.write_tls(&mut &**sock)?;
                        }
                        continue;
                    }
                }
                let mut raw = [0u8; 16384];
                let n = (&**sock).read(&mut raw)?;
                if n == 0 {
                    return Ok(0);
                }
                pending.lock().unwrap().extend_from_slice(&raw[..n]);
            },
        }
    }

    fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Side::Plain(s) => (&**s).write_all(data),
            Side::Tls(sock, conn, _) => {
                let mut c = conn.lock().unwrap();
                c.writer().write_all(data)?;
                while c.wants_write() {
                    c.write_tls(&mut &**sock)?;
                }
                Ok(())
            }
        }
    }

    fn sock(&self) -> &TcpStream {
        match self {
            Side::Plain(s) | Side::Tls(s, _, _) => s,
        }
    }
}

fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and option struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Forwards response bytes to the client, trickled while `drip` is set (the answer to a
/// request that drew [`Kind::Drip`]).
fn forward_down(
    client: &Side,
    data: &[u8],
    drip: &AtomicBool,
    faults: &Faults,
) -> std::io::Result<()> {
    if !drip.load(std::sync::atomic::Ordering::SeqCst) {
        return client.write_all(data);
    }
    let every = match faults
        .drip_every_ms
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        0 => 250,
        ms => ms,
    };
    for b in data {
        client.write_all(std::slice::from_ref(b))?;
        std::thread::sleep(std::time::Duration::from_millis(every));
    }
    Ok(())
}

/// The client went away in the middle of a request's body: the upstream connection is
/// closed too (else the server waits for the rest, and the reader thread with it).
fn close_upstream(up: &TcpStream) {
    let _ = up.shutdown(Shutdown::Both);
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

fn serve(client: Side, upstream: String, faults: Arc<Faults>) {
    let Ok(up) = TcpStream::connect(&upstream) else {
        return;
    };
    let up = Arc::new(up);
    let drip = Arc::new(AtomicBool::new(false));
    {
        let (client, up, drip, faults) = (client.clone(), up.clone(), drip.clone(), faults.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match (&*up).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if forward_down(&client, &buf[..n], &drip, &faults).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = client.sock().shutdown(Shutdown::Write);
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 65536];
    loop {
        // Headers of the next request.
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match client.read(&mut tmp) {
                Ok(0) | Err(_) => {
                    let _ = up.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let line = head.lines().next().unwrap_or("").to_string();
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if faults.down.load(std::sync::atomic::Ordering::SeqCst) {
            faults
                .log
                .lock()
                .unwrap()
                .push((line.clone(), Some(Kind::Reset)));
            reset(client.sock());
            reset(&up);
            return;
        }
        let fault = faults.take(&method, &target, len);
        faults.log.lock().unwrap().push((line.clone(), fault));
        drip.store(
            fault == Some(Kind::Drip),
            std::sync::atomic::Ordering::SeqCst,
        );
        if fault == Some(Kind::Reset) {
            reset(client.sock());
            reset(&up);
            return;
        }
        let answer = match fault {
            Some(Kind::SlowDown) => Some(("503 Service Unavailable", "SlowDown")),
            Some(Kind::Forbidden) => Some(("403 Forbidden", "AccessDenied")),
            _ => faults.customer_refusal(&method, &target, &head),
        };
        if let Some((status, code)) = answer {
            // Read the body first, as servers do, so the client sees the answer.
            buf.drain(..end);
            let mut left = len;
            while left > 0 {
                if buf.is_empty() {
                    match client.read(&mut tmp) {
                        Ok(0) | Err(_) => return close_upstream(&up),
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let n = buf.len().min(left);
                buf.drain(..n);
                left -= n;
            }
            let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>");
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes());
            let _ = client.sock().shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            return;
        }
        if (&*up).write_all(&buf[..end]).is_err() {
            return;
        }
        buf.drain(..end);
        // Body.
        let mut left = len;
        let mut offset = 0usize;
        while left > 0 {
            if buf.is_empty() {
                match client.read(&mut tmp) {
                    Ok(0) | Err(_) => return close_upstream(&up),
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            let mut n = buf.len().min(left);
            let rate = faults.throttle_up.load(std::sync::atomic::Ordering::SeqCst) as usize;
            if rate > 0 {
                // A twentieth of a second's worth at a time.
                n = n.min((rate / 20).max(1));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            while fault == Some(Kind::Hold)
                && offset >= 1 << 20
                && !faults.released.load(std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if fault == Some(Kind::FlipByte) && offset <= 40 && 40 < offset + n {
                buf[40 - offset] ^= 0x01;
            }
            if (&*up).write_all(&buf[..n]).is_err() {
                return;
            }
            buf.drain(..n);
            left -= n;
            offset += n;
        }
    }
}

impl Proxy {
    /// The request lines it saw, in order.
    pub fn request_lines(&self) -> Vec<String> {
        let log = self.faults.log.lock().unwrap();
        log.iter().map(|(l, _)| l.clone()).collect()
    }

    /// Starts a proxy to `upstream_url` (`http://127.0.0.1:PORT`); with `tls`, clients speak
    /// TLS to it with a certificate for `localhost` and 127.0.0.1 signed by a fresh CA.
    pub fn start(upstream_url: &str, tls: bool) -> Proxy {
        Self::start_with(upstream_url, tls, None)
    }

    /// A proxy that forwards request bodies at `bytes_per_second`, like a slow link: its
    /// client sockets have a small receive buffer, so that bytes not yet forwarded stay in
    /// the sender's send queue (unacknowledged), as on a real link, rather than in ours.
    pub fn start_throttled(upstream_url: &str, bytes_per_second: u64) -> Proxy {
        let p = Self::start_with(upstream_url, false, Some(64 * 1024));
        p.faults
            .throttle_up
            .store(bytes_per_second, std::sync::atomic::Ordering::SeqCst);
        p
    }

    fn start_with(upstream_url: &str, tls: bool, receive_buffer: Option<i32>) -> Proxy {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        if let Some(n) = receive_buffer {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid socket and an int option; accepted sockets inherit it.
            unsafe {
                libc::setsockopt(
                    listener.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &n as *const i32 as *const libc::c_void,
                    std::mem::size_of::<i32>() as libc::socklen_t,
                );
            }
        }
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let (server_cfg, ca_pem) = if tls {
            let (cfg, pem) = tls_config();
            (Some(cfg), Some(pem))
        } else {
            (None, None)
        };
        let f = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                f.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn.set_nodelay(true);
                let side = match &server_cfg {
                    None => Side::Plain(Arc::new(conn)),
                    Some(cfg) => Side::Tls(
                        Arc::new(conn),
                        Arc::new(Mutex::new(
                            rustls::ServerConnection::new(cfg.clone()).unwrap(),
                        )),
                        Arc::default(),
                    ),
                };
                let (upstream, f) = (upstream.clone(), f.clone());
                std::thread::spawn(move || serve(side, upstream, f));
            }
        });
        let scheme = if tls { "https" } else { "http" };
        Proxy {
            url: format!("{scheme}://localhost:{port}"),
            faults,
            ca_pem,
        }
    }
}

fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let pki = Pki::new();
    (pki.server_config(false), pki.ca_pem)
}

/// A TLS front for a plain TCP service (a Kafka broker): clients speak TLS to it, with a
/// certificate for localhost and 127.0.0.1 signed by a fresh CA; with `client_auth` they
/// must also present a certificate that CA signed. Bytes are forwarded unchanged.
pub struct Tunnel {
    pub port: u16,
    /// PEM of the CA, and of a client certificate and its key signed by it.
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    /// Handshakes that completed, and those that failed.
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    pub refused: Arc<std::sync::atomic::AtomicUsize>,
    upstream: Arc<Mutex<String>>,
}

impl Tunnel {
    /// Listens now (so its port can be advertised); forwards to the upstream set later.
    pub fn start(client_auth: bool) -> Tunnel {
        let pki = Pki::new();
        let cfg = pki.server_config(client_auth);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = Tunnel {
            port,
            ca_pem: pki.ca_pem.clone(),
            client_cert_pem: pki.client_cert_pem.clone(),
            client_key_pem: pki.client_key_pem.clone(),
            handshakes: Arc::default(),
            refused: Arc::default(),
            upstream: Arc::default(),
        };
        let (ok, bad, up) = (t.handshakes.clone(), t.refused.clone(), t.upstream.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (cfg, ok, bad, up) = (cfg.clone(), ok.clone(), bad.clone(), up.clone());
                std::thread::spawn(move || {
                    let side = Side::Tls(
                        Arc::new(conn),
                        Arc::new(Mutex::new(rustls::ServerConnection::new(cfg).unwrap())),
                        Arc::default(),
                    );
                    let upstream = up.lock().unwrap().clone();
                    tunnel(side, &upstream, &ok, &bad);
                });
            }
        });
        t
    }

    /// Where connections go (`127.0.0.1:PORT`).
    pub fn forward_to(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_string();
    }
}

/// Forwards one TLS connection to `upstream`, both ways, until either side closes.
fn tunnel(side: Side, upstream: &str, ok: &AtomicUsize, bad: &AtomicUsize) {
    let mut first = [0u8; 16384];
    // The handshake happens during the first read.
    let n = match side.read(&mut first) {
        Ok(n) if n > 0 => n,
        _ => {
            bad.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return;
        }
    };
    ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let Ok(up) = TcpStream::connect(upstream) else {
        return;
    };
    let up = Arc::new(up);
    if (&*up).write_all(&first[..n]).is_err() {
        return;
    }
    let (down_side, down_up) = (side.clone(), up.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = (&*down_up).read(&mut buf) {
            if n == 0 || down_side.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = down_side.sock().shutdown(Shutdown::Both);
    });
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = side.read(&mut buf) {
        if n == 0 || (&*up).write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = up.shutdown(Shutdown::Both);
}

/// A fresh CA and a certificate for localhost and 127.0.0.1 it signed, with its key:
/// (CA, certificate, key), PEM.
pub fn server_certificate() -> (String, String, String) {
    let pki = Pki::new();
    (pki.ca_pem, pki.server_pem.0, pki.server_pem.1)
}

/// A fresh CA, a server certificate for localhost and 127.0.0.1, and a client certificate.
struct Pki {
    ca_pem: String,
    roots: rustls::RootCertStore,
    server: (rustls_pki_types::CertificateDer<'static>, Vec<u8>),
    server_pem: (String, String),
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "backbeat test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params =
            rcgen::CertificateParams::new(vec!["backbeat-client".to_string()]).unwrap();
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            roots,
            server: (server.der().clone(), server_key.serialize_der()),
            server_pem: (server.pem(), server_key.serialize_pem()),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(self.roots.clone()),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let cfg = builder
            .with_single_cert(
                vec![self.server.0.clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(self.server.1.clone().into()),
            )
            .unwrap();
        Arc::new(cfg)
    }
}
