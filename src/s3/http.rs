//! HTTP/1.1 to one S3 endpoint: glommio TCP sockets, optional rustls TLS, the adapter that
//! lets hyper 1.x drive them, a per-shard pool of idle connections, and the request and
//! response bodies (a response body read to its end gives its connection back to the pool).
//!
//! Everything here is `!Send` and lives on one shard: a pool belongs to one executor.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::client::conn::http1::SendRequest;
use rustls_pki_types::ServerName;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::{BodyError, RequestError};
use super::progress::{Check, Progress};

/// A connected socket, plain or TLS (the client side of an S3 connection, or the server
/// side of an operations API connection).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
    TlsServer(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

/// Adapts a glommio stream to hyper's I/O traits.
///
/// Reads go straight into hyper's buffer without zeroing it first: the socket (or rustls)
/// only writes into the slice, never reads it, as tokio's own `TcpStream` relies on too.
/// Writes of a plain socket are vectored (`sendmsg` with several buffers), so hyper queues request body frames
/// instead of flattening them into its own buffer: body bytes are never copied in user space.
///
/// A client connection dropped while it was sending (a request abandoned mid-body: a task
/// fenced at a rebalance, a shutdown past its deadline) is reset (RST) rather than closed,
/// so the bytes still in the socket buffers are discarded instead of delivered: the server
/// sees a broken request, never a complete stale write arriving late.
///
/// A client connection's waits on its peer are bounded by progress ([`Watch`]).
pub struct HyperIo {
    stream: Stream,
    /// A client connection whose last transfer was a write (see above).
    reset_if_abandoned: bool,
    sending: bool,
    /// A write was left waiting for the socket since the last flush (see `poll_flush`).
    wake_owed: bool,
    watch: Option<Watch>,
}

impl HyperIo {
    /// The server side of a connection (the operations API).
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            reset_if_abandoned: false,
            sending: false,
            wake_owed: false,
            watch: None,
        }
    }

    /// The client side of a connection to an S3 endpoint, its waits bounded by `progress`.
    pub fn client(stream: Stream, progress: Progress) -> Self {
        let mut io = Self::new(stream);
        io.reset_if_abandoned = true;
        io.watch = Some(Watch {
            progress,
            timer: None,
            armed: None,
            fd: io.fd(),
            queued: None,
            look_again: None,
        });
        io
    }

    /// A write: the first of a request (after reading the previous answer, or idle in the
    /// pool) restarts the progress clock.
    fn writing(&mut self) {
        if !self.sending {
            if let Some(w) = &mut self.watch {
                w.progress.restart();
                w.queued = None;
                w.look_again = None;
            }
        }
        self.sending = true;
    }

    fn moved(&mut self, n: usize) {
        if let Some(w) = &mut self.watch {
            if n > 0 {
                w.queued = None;
                w.look_again = None;
            }
            w.progress.moved(n, Instant::now);
        }
    }

    /// Counts a write's bytes, or judges its wait.
    fn written(
        &mut self,
        polled: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.wake_owed = true;
                self.wait(cx)
            }
        }
    }

    /// The peer made us wait: fails when progress says so, else arms the timer.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match &mut self.watch {
            Some(w) => w.wait(cx),
            None => Poll::Pending,
        }
    }

    fn fd(&self) -> std::os::fd::RawFd {
        match &self.stream {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.get_ref().0.as_raw_fd(),
            Stream::TlsServer(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

/// The progress clock of a client connection and the timer that wakes its task when a wait
/// is to be judged. The timer is armed once per wait deadline, not per wait: an earlier
/// wake-up finds a later deadline and re-arms for it.
struct Watch {
    progress: Progress,
    timer: Option<glommio::timer::Timer>,
    /// When the timer fires.
    armed: Option<Instant>,
    /// The socket, to see its send queue drain while we wait for an answer.
    fd: std::os::fd::RawFd,
    /// Bytes in its send queue (unsent or unacknowledged) at the last deadline's look.
    queued: Option<u32>,
    /// When a deadline that found bytes in the send queue looks again.
    look_again: Option<Instant>,
}

/// Bytes in a socket's send queue, not yet acknowledged by the peer (SIOCOUTQ).
fn send_queue(fd: std::os::fd::RawFd) -> Option<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(n.max(0) as u32)
}

/// What the send queue says at a deadline.
enum Queue {
    /// Bytes of ours left it since the last look: progress.
    Drained,
    /// Bytes wait in it and it has not been looked at in this wait: look again shortly.
    LookAgain,
    /// Empty, or not moving: the wait is over.
    Still,
}

impl Watch {
    /// At a deadline: did the kernel send bytes of ours (a request body written into the
    /// socket buffers moves on while we wait for the answer)?
    fn send_queue_at(&mut self, now: Instant) -> Queue {
        let q = send_queue(self.fd).unwrap_or(0);
        let before = self.queued.replace(q);
        match before {
            Some(b) if q < b => {
                self.progress.moved((b - q) as usize, || now);
                Queue::Drained
            }
            None if q > 0 => Queue::LookAgain,
            _ => Queue::Still,
        }
    }

    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            let now = Instant::now();
            let at = match self.progress.waiting(now) {
                Check::Wait(at) => at,
                Check::Fail(_) if self.look_again.is_some_and(|t| now < t) => {
                    self.look_again.unwrap_or(now)
                }
                Check::Fail(why) => match self.send_queue_at(now) {
                    Queue::Drained => {
                        self.look_again = None;
                        continue;
                    }
                    Queue::LookAgain => *self.look_again.insert(now + LOOK_AGAIN),
                    Queue::Still => {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                    }
                },
            };
            if self.armed.is_some_and(|a| a > now && a <= at) {
                return Poll::Pending;
            }
            let d = at.saturating_duration_since(now);
            let t = self
                .timer
                .get_or_insert_with(|| glommio::timer::Timer::new(d));
            t.reset(d);
            if std::future::Future::poll(Pin::new(t), cx).is_pending() {
                self.armed = Some(at);
                return Poll::Pending;
            }
        }
    }
}

/// How soon a deadline that found bytes in the send queue looks again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl Drop for HyperIo {
    fn drop(&mut self) {
        if !(self.reset_if_abandoned && self.sending) {
            return;
        }
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a linger value; close then sends RST.
        unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = {
            // SAFETY: the slice is only written to by recv(2)/rustls before `advance`, and
            // `advance` is called with exactly the number of bytes written.
            let dst: &mut [MaybeUninit<u8>] = unsafe { buf.as_mut() };
            let dst: &mut [u8] = unsafe { &mut *(dst as *mut [MaybeUninit<u8>] as *mut [u8]) };
            let polled = match &mut this.stream {
                Stream::Plain(s) => Pin::new(s).poll_read(cx, dst),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, dst),
                Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, dst),
            };
            match polled {
                Poll::Ready(r) => r?,
                Poll::Pending => return this.wait(cx),
            }
        };
        if n > 0 {
            this.sending = false;
            this.moved(n);
        }
        // SAFETY: n bytes were just written.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writing();
        let polled = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.written(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writing();
        let polled = match &mut this.stream {
            Stream::Plain(s) => {
                let iov = &bufs[..bufs.len().min(64)];
                // glommio sockets are blocking file descriptors that it drives with
                // MSG_DONTWAIT: do the same, never a plain writev.
                // SAFETY: an all-zero msghdr is valid; iov is a valid array of iovecs
                // (IoSlice is ABI-compatible with iovec on Unix) that outlives the call.
                let n = unsafe {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = iov.len() as _;
                    libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                };
                if n >= 0 {
                    this.moved(n as usize);
                    return Poll::Ready(Ok(n as usize));
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::WouldBlock {
                    return Poll::Ready(Err(err));
                }
                // Socket full: let glommio register for writability through io_uring.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map(|b| &**b)
                    .unwrap_or(&[]);
                Pin::new(s).poll_write(cx, first)
            }
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.written(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self.stream, Stream::Plain(_))
    }

    /// Flushing everything hyper buffered ends a wait on the socket that a write started:
    /// the task is woken once more. hyper (1.12's dispatcher) can flush right after a write
    /// went pending and then yield, counting on that write's wake-up; but the flush
    /// succeeded, and glommio's `poll_write` drops its wait for writability once a send
    /// through it succeeds (our vectored path falls back to it after `EAGAIN`, TLS always
    /// writes through it), so no wake-up would come and the rest of the body would never
    /// be written (a response stalled mid-body until the peer's idle timeout, seen in the
    /// 16 MiB benchmark).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.wake_owed) {
            cx.waker().wake_by_ref();
        }
        match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// How to reach an endpoint: resolved addresses, TLS settings and timeouts. `Send + Sync`,
/// shared by every shard's pool.
#[derive(Clone)]
pub struct ConnectSpec {
    pub addrs: Vec<SocketAddr>,
    /// Present for https endpoints.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub connect_timeout: Duration,
    /// A request waiting on the peer with no byte moved either way for this long fails
    /// (retryable); see [`super::progress`].
    pub io_idle_timeout: Duration,
    /// Bytes per second a waiting request must at least see (0: no guard).
    pub min_rate: u64,
    /// A request lasting longer than this fails, even one that keeps moving (none: no limit).
    pub request_deadline: Option<Duration>,
    /// Idle pooled connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub read_buffer: usize,
    pub socket_buffer: Option<usize>,
    pub label: String,
}

/// Sets SO_SNDBUF and SO_RCVBUF (the kernel caps them at net.core.wmem_max/rmem_max).
fn set_socket_buffers(fd: std::os::fd::RawFd, n: usize) {
    let v = n.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

async fn connect(spec: &ConnectSpec) -> Result<Stream, RequestError> {
    let mut last = None;
    for addr in &spec.addrs {
        match TcpStream::connect_timeout(*addr, spec.connect_timeout).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                if let Some(n) = spec.socket_buffer {
                    set_socket_buffers(s.as_raw_fd(), n);
                }
                return match &spec.tls {
                    None => Ok(Stream::Plain(s)),
                    Some((cfg, name)) => {
                        // The handshake is bounded by the socket's own timeouts; requests
                        // then by their progress (HyperIo).
                        let _ = s.set_read_timeout(Some(spec.io_idle_timeout));
                        let _ = s.set_write_timeout(Some(spec.io_idle_timeout));
                        let tls = futures_rustls::TlsConnector::from(cfg.clone())
                            .connect(name.clone(), s)
                            .await
                            .map_err(|e| RequestError::Tls {
                                endpoint: spec.label.clone(),
                                message: e.to_string(),
                            })?;
                        let _ = tls.get_ref().0.set_read_timeout(None);
                        let _ = tls.get_ref().0.set_write_timeout(None);
                        Ok(Stream::Tls(Box::new(tls)))
                    }
                };
            }
            Err(e) => last = Some(e),
        }
    }
    let message = match last {
        Some(glommio::GlommioError::IoError(e)) => e.to_string(),
        Some(glommio::GlommioError::TimedOut(_)) => "connect timed out".to_string(),
        Some(e) => e.to_string(),
        None => "no address".to_string(),
    };
    Err(RequestError::Connect {
        endpoint: spec.label.clone(),
        message,
    })
}

/// Idle HTTP/1.1 connections to one endpoint, owned by one shard.
pub struct Pool {
    spec: ConnectSpec,
    idle: RefCell<Vec<(Link, Instant)>>,
}

/// One connection's request handle; its connection runs in a task of its own. A request
/// abandoned on the way (its caller dropped) does not finish on its own later: its body
/// fails (the upload pipe of `body.rs`), so the connection drops the request and is reset
/// (see [`HyperIo`]).
pub struct Link {
    pub sender: SendRequest<ReqBody>,
}

/// A connection taken from the pool; give it back with [`Pool::release`] once its response
/// body has been read to the end.
pub struct Conn {
    pub link: Link,
    pub reused: bool,
}

impl Pool {
    /// A fresh progress clock for a connection of this pool.
    fn progress(&self) -> Progress {
        Progress::new(self.spec.io_idle_timeout, self.spec.min_rate)
            .with_deadline(self.spec.request_deadline)
    }

    pub fn new(spec: ConnectSpec) -> Rc<Self> {
        Rc::new(Self {
            spec,
            idle: RefCell::new(Vec::new()),
        })
    }

    pub fn spec(&self) -> &ConnectSpec {
        &self.spec
    }

    /// An idle connection if one is usable, else a new one.
    pub async fn acquire(&self, fresh: bool) -> Result<Conn, RequestError> {
        if !fresh {
            let now = Instant::now();
            let mut idle = self.idle.borrow_mut();
            while let Some((link, since)) = idle.pop() {
                // Idle past half the I/O idle timeout, its own clock may end it any moment.
                let max_age = self.spec.idle_timeout.min(self.spec.io_idle_timeout / 2);
                if link.sender.is_ready()
                    && !link.sender.is_closed()
                    && now.duration_since(since) < max_age
                {
                    return Ok(Conn { link, reused: true });
                }
            }
        }
        let stream = connect(&self.spec).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(true)
            .read_buf_exact_size(Some(self.spec.read_buffer))
            .handshake(HyperIo::client(stream, self.progress()))
            .await
            .map_err(request_error)?;
        glommio::spawn_local(async move {
            let _ = conn.await;
        })
        .detach();
        let link = Link { sender };
        Ok(Conn {
            link,
            reused: false,
        })
    }

    /// Returns a connection whose response is complete. One that is not ready yet (its
    /// connection task has not seen the end of the exchange) joins the pool once it is.
    pub fn release(self: &Rc<Self>, mut link: Link) {
        if link.sender.is_closed() {
            return;
        }
        if link.sender.is_ready() {
            self.keep(link);
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            let ready = async { Some(link.sender.ready().await.is_ok()) };
            let limit = async {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                None
            };
            if futures_lite::future::or(ready, limit).await == Some(true) {
                me.keep(link);
            }
        })
        .detach();
    }

    fn keep(&self, link: Link) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.spec.max_idle {
            idle.push((link, Instant::now()));
        }
    }
}

/// A response body. Once read to its end, its connection goes back to the pool.
pub struct RespBody {
    source: Source,
}

enum Source {
    Http {
        inner: Incoming,
        ret: Option<(Rc<Pool>, Link)>,
    },
    /// Frames already in memory (an in-memory store's object, in tests).
    Memory(std::collections::VecDeque<Bytes>),
}

/// A response whose body is known to be complete (HEAD, or `Content-Length: 0`) gives its
/// connection back to the pool even when nobody polled the body; any other unfinished body
/// closes its connection (its state is unknown).
impl Drop for RespBody {
    fn drop(&mut self) {
        if let Source::Http { inner, ret } = &mut self.source {
            if let Some((pool, link)) = ret.take() {
                if http_body::Body::is_end_stream(inner) {
                    pool.release(link);
                }
            }
        }
    }
}

impl RespBody {
    pub(crate) fn new(inner: Incoming, pool: Rc<Pool>, link: Link) -> Self {
        let ret = Some((pool, link));
        Self {
            source: Source::Http { inner, ret },
        }
    }

    /// A body whose frames are already in memory.
    pub fn from_frames(frames: impl IntoIterator<Item = Bytes>) -> Self {
        let frames = frames.into_iter().filter(|f| !f.is_empty()).collect();
        Self {
            source: Source::Memory(frames),
        }
    }

    /// The next data frame, `None` at the end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RequestError>>> {
        let (inner, ret) = match &mut self.source {
            Source::Memory(frames) => return Poll::Ready(frames.pop_front().map(Ok)),
            Source::Http { inner, ret } => (inner, ret),
        };
        loop {
            match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                }
                Some(Err(e)) => {
                    *ret = None;
                    return Poll::Ready(Some(Err(request_error(e))));
                }
                None => {
                    if let Some((pool, link)) = ret.take() {
                        pool.release(link);
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    pub async fn data(&mut self) -> Option<Result<Bytes, RequestError>> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }

    /// Reads the whole body (for small XML documents).
    pub async fn collect(mut self, limit: usize) -> Result<Vec<u8>, RequestError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.data().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(RequestError::BadResponse(format!(
                    "response body larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// A request body.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    /// A streamed body of known length (the data path's pipe), sent once: a request with
    /// such a body is never replayed on a new connection.
    Stream(Box<dyn Body<Data = Bytes, Error = BodyError> + Unpin>),
}

impl ReqBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ReqBody::Full(Some(b.into()))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            ReqBody::Stream(s) => s.size_hint(),
        }
    }
}

/// A hyper error as a [`RequestError`]: a timeout, a failure of our own request body
/// (source failure, checksum) carried through hyper, or a connection error with its causes.
pub(crate) fn request_error(e: hyper::Error) -> RequestError {
    if e.is_timeout() {
        return RequestError::Timeout { why: e.to_string() };
    }
    // A body error raised by our own request body (source failure, checksum) is
    // carried through hyper: recover it.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        if let Some(be) = s.downcast_ref::<BodyError>() {
            return be.to_request_error();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return RequestError::Timeout {
                    why: io.to_string(),
                };
            }
        }
        src = s.source();
    }
    let mut msg = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    RequestError::Io {
        message: msg,
        source: Some(Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A write left waiting on a full socket is followed by a flush: the flush wakes the
    /// task, since the wait the write started may be dropped (see `poll_flush`).
    #[test]
    fn a_flush_after_a_pending_write_wakes_the_task_once() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = TcpStream::connect(addr).await.unwrap();
                let _server = listener.accept().await.unwrap(); // never reads
                set_socket_buffers(client.as_raw_fd(), 4096);
                let mut io = HyperIo::new(Stream::Plain(client));
                let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
                let waker = std::task::Waker::from(count.clone());
                let mut cx = Context::from_waker(&waker);
                let chunk = vec![7u8; 64 * 1024];
                let bufs = [io::IoSlice::new(&chunk), io::IoSlice::new(&chunk)];
                let mut pending = false;
                for _ in 0..100_000 {
                    if Pin::new(&mut io)
                        .poll_write_vectored(&mut cx, &bufs)
                        .is_pending()
                    {
                        pending = true;
                        break;
                    }
                }
                assert!(pending, "the socket never filled up");
                assert_eq!(count.0.load(Ordering::SeqCst), 0);
                assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
                assert_eq!(count.0.load(Ordering::SeqCst), 1, "the flush woke the task");
                assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    1,
                    "one wake per wait, no more"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
