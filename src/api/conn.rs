//! The operations API's connections: the accept loop, optional TLS, a cap on open
//! connections, hyper's header-read timeout, and a deadline on request bodies, so that
//! clients that connect and send nothing (or a byte at a time) can neither exhaust the
//! process's descriptors nor keep a real request out.
//!
//! At the cap, a new connection makes room by closing the oldest one that is not serving a
//! request (reading a request's head, or idle between two); when every open connection is
//! serving one, the new connection is closed instead. The header-read timeout also bounds
//! an idle keep-alive connection: hyper arms it whenever it waits for a request's head.
//!
//! Owns: the accept loop and the table of open connections. May call: `s3::http` (the
//! glommio socket adapter hyper serves on), `shard` (shutdown).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::s3::http::{HyperIo, Stream};
use crate::shard::Shutdown;

/// How long the API waits after a failed accept (out of descriptors, say) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Bounds on the API's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request's head must arrive within this (and an idle connection closes after it).
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// One open connection, as the table sees it.
pub(super) struct Slot {
    /// Serving a request: its handler running, the request whole and allowed.
    busy: Cell<bool>,
    close: event_listener::Event,
    closing: Cell<bool>,
}

impl Slot {
    /// Marks the connection busy until the returned guard is dropped; none when it is being
    /// closed to make room (its request is then refused, not half run).
    pub(super) fn serving(self: &Rc<Self>) -> Option<Busy> {
        if self.closing.get() {
            return None;
        }
        self.busy.set(true);
        Some(Busy(self.clone()))
    }

    async fn closed(&self) {
        loop {
            if self.closing.get() {
                return;
            }
            let l = self.close.listen();
            if self.closing.get() {
                return;
            }
            l.await;
        }
    }
}

/// A connection serving a request; idle again once dropped.
pub(super) struct Busy(Rc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    next: Cell<u64>,
    open: RefCell<BTreeMap<u64, Rc<Slot>>>,
}

impl Table {
    /// Makes room for one more connection under `max`: closes the oldest idle one when
    /// full. False when every open connection is serving a request.
    fn make_room(&self, max: usize) -> bool {
        let open = self.open.borrow();
        let closing = open.values().filter(|s| s.closing.get()).count();
        if open.len() - closing < max {
            return true;
        }
        match open.values().find(|s| !s.busy.get() && !s.closing.get()) {
            Some(oldest_idle) => {
                oldest_idle.closing.set(true);
                oldest_idle.close.notify(usize::MAX);
                true
            }
            None => false,
        }
    }

    fn insert(&self) -> (u64, Rc<Slot>) {
        let id = self.next.get();
        self.next.set(id + 1);
        let slot = Rc::new(Slot {
            busy: Cell::new(false),
            close: event_listener::Event::new(),
            closing: Cell::new(false),
        });
        self.open.borrow_mut().insert(id, slot.clone());
        (id, slot)
    }
}

/// Accepts connections until `shutdown`; `serve` serves each one (its stream, after the
/// TLS handshake when `tls` is given, and the slot its requests mark busy) on a task of
/// its own.
///
/// An accept is never abandoned while it may complete: io_uring hands an accepted socket to
/// the completion of the request, so dropping a pending accept (to look at a timer, say)
/// can drop a connection the kernel already accepted, whose client then waits for ever.
pub(super) async fn accept<S, F>(
    listener: glommio::net::TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
    serve: S,
) where
    S: Fn(HyperIo, Rc<Slot>) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let table = Rc::new(Table::default());
    let serve = Rc::new(serve);
    let tls = tls.map(futures_rustls::TlsAcceptor::from);
    loop {
        let next = async { Some(listener.accept().await) };
        let stop = async {
            shutdown.wait().await;
            None
        };
        let stream = match futures_lite::future::or(next, stop).await {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the operations API cannot accept a connection");
                glommio::timer::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        if !table.make_room(limits.max_connections) {
            tracing::debug!("operations API: every connection busy, one refused");
            continue;
        }
        let (id, slot) = table.insert();
        let (table, serve, tls) = (table.clone(), serve.clone(), tls.clone());
        glommio::spawn_local(async move {
            let work = async {
                if let Some(io) = handshake(stream, tls, limits.header_timeout).await {
                    serve(io, slot.clone()).await;
                }
            };
            futures_lite::future::or(work, slot.closed()).await;
            table.open.borrow_mut().remove(&id);
        })
        .detach();
    }
}

/// The connection's stream: plain, or TLS once its handshake completed within `limit`.
async fn handshake(
    stream: glommio::net::TcpStream,
    tls: Option<futures_rustls::TlsAcceptor>,
    limit: Duration,
) -> Option<HyperIo> {
    let Some(acceptor) = tls else {
        return Some(HyperIo::new(Stream::Plain(stream)));
    };
    let shake = async { Some(acceptor.accept(stream).await) };
    let late = async {
        glommio::timer::sleep(limit).await;
        None
    };
    match futures_lite::future::or(shake, late).await {
        Some(Ok(tls)) => Some(HyperIo::new(Stream::TlsServer(Box::new(tls)))),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "operations API: a TLS handshake failed");
            None
        }
        None => None,
    }
}

/// The API's TLS settings from a certificate chain and its key (PEM files).
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let shown = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| shown(cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| shown(cert_file, &e))?;
    if certs.is_empty() {
        return Err(shown(cert_file, &"no certificate in the file"));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| shown(key_file, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(Arc::new(cfg))
}

/// hyper's timer (header-read timeout), on `futures_timer` (its own thread): hyper wants
/// `Send` sleeps, which glommio's timers are not.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Timer;

struct Nap(futures_timer::Delay);

impl Future for Nap {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for Nap {}

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Nap(futures_timer::Delay::new(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_closes_its_oldest_idle_connection() {
        let t = Table::default();
        let (_, a) = t.insert();
        let (_, b) = t.insert();
        let busy = a.serving().unwrap();
        assert!(t.make_room(3), "room left");
        assert!(t.make_room(2), "b is idle: it makes room");
        assert!(b.closing.get() && !a.closing.get());
        let (_, c) = t.insert();
        let _c_busy = c.serving().unwrap();
        assert!(
            b.serving().is_none(),
            "a closing connection serves nothing more"
        );
        assert!(!t.make_room(2), "a and c serve requests");
        drop(busy);
        assert!(t.make_room(2), "a is idle again");
        assert!(a.closing.get());
    }
}
