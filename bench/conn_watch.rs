//! Diagnostics for the in-memory endpoint's connections (`MEM_S3_WATCH=1`): per connection,
//! the bytes hyper wrote, whether its last write was left waiting, and when its task was
//! last polled and woken. Every second, connections with a write waiting for more than 2 s,
//! or quiet for 2-4 s, are logged to stderr, so a response that stops mid-body can be told
//! apart: a task waiting on a socket that never woke it, a task never woken again, or a
//! task woken but not polled. (It told the first 16 MiB stall apart: hyper had yielded
//! with no write waiting and no wake-up to come; see `HyperIo::poll_flush`.)

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use backbeat::s3::http::HyperIo;

#[derive(Default)]
pub struct ConnState {
    pub id: u64,
    pub written: Cell<u64>,
    pub read: Cell<u64>,
    pub writes: Cell<u64>,
    pub last_write: Cell<Option<Instant>>,
    pub write_pending: Cell<Option<Instant>>,
    pub read_pending: Cell<Option<Instant>>,
    pub closed: Cell<bool>,
    pub fd: Cell<i32>,
    /// The connection task: when it was last polled, what that poll returned, and whether
    /// its waker was called since.
    pub polled: Cell<Option<Instant>>,
    pub polls: Cell<u64>,
    pub last_pending: Cell<bool>,
    pub woken: Arc<AtomicBool>,
}

struct FlagWaker {
    inner: Waker,
    flag: Arc<AtomicBool>,
}

impl std::task::Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
}

/// Wraps a connection's future: records its polls and flags its wake-ups.
pub struct Task<F> {
    pub fut: Pin<Box<F>>,
    pub st: Rc<ConnState>,
}

impl<F: std::future::Future> std::future::Future for Task<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.st.woken.store(false, Ordering::SeqCst);
        this.st.polled.set(Some(Instant::now()));
        this.st.polls.set(this.st.polls.get() + 1);
        let w = Waker::from(Arc::new(FlagWaker {
            inner: cx.waker().clone(),
            flag: this.st.woken.clone(),
        }));
        let mut cx2 = Context::from_waker(&w);
        let r = this.fut.as_mut().poll(&mut cx2);
        this.st.last_pending.set(r.is_pending());
        r
    }
}

thread_local! {
    static CONNS: RefCell<Vec<Rc<ConnState>>> = const { RefCell::new(Vec::new()) };
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

pub struct Watched {
    io: HyperIo,
    st: Rc<ConnState>,
}

impl Watched {
    pub fn state(&self) -> Rc<ConnState> {
        self.st.clone()
    }

    pub fn new(io: HyperIo, fd: i32) -> Self {
        let id = NEXT.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        let st = Rc::new(ConnState {
            id,
            ..Default::default()
        });
        st.fd.set(fd);
        CONNS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|s| !s.closed.get());
            c.push(st.clone());
        });
        Self { io, st }
    }

    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        let st = &self.st;
        st.writes.set(st.writes.get() + 1);
        match r {
            Poll::Ready(Ok(n)) => {
                st.written.set(st.written.get() + *n as u64);
                st.last_write.set(Some(Instant::now()));
                st.write_pending.set(None);
            }
            Poll::Ready(Err(_)) => st.write_pending.set(None),
            Poll::Pending => {
                if st.write_pending.get().is_none() {
                    st.write_pending.set(Some(Instant::now()));
                }
            }
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.st.closed.set(true);
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        match &r {
            Poll::Pending => {
                if this.st.read_pending.get().is_none() {
                    this.st.read_pending.set(Some(Instant::now()));
                }
            }
            _ => {
                this.st.read.set(this.st.read.get() + 1);
                this.st.read_pending.set(None)
            }
        }
        r
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn send_queue(fd: i32) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int.
    unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    n
}

fn task(s: &ConnState, now: Instant) -> String {
    format!(
        "task: polls {}, last poll {:?} ago, pending {}, woken since {}",
        s.polls.get(),
        s.polled.get().map(|t| now - t),
        s.last_pending.get(),
        s.woken.load(Ordering::SeqCst)
    )
}

/// Runs on the executor: every second, logs connections whose write has waited more than
/// 2 s, and (twice) those whose last write is 2-4 s old: idle keep-alive connections too,
/// to be told apart from a stalled response by their bytes written.
pub async fn watch() {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        CONNS.with(|c| {
            for s in c.borrow().iter().filter(|s| !s.closed.get()) {
                let wp = s.write_pending.get().map(|t| now - t);
                let lw = s.last_write.get().map(|t| now - t);
                if wp.is_some_and(|d| d > Duration::from_secs(2)) {
                    eprintln!(
                        "mem-s3 watch: conn {} fd {} write pending {:?} (written {}, writes {}, last write {:?} ago, read pending {:?}, sendq {}) {}",
                        s.id, s.fd.get(), wp, s.written.get(), s.writes.get(), lw,
                        s.read_pending.get().map(|t| now - t), send_queue(s.fd.get()), task(s, now)
                    );
                } else if lw.is_some_and(|d| d > Duration::from_secs(2) && d < Duration::from_secs(4)) {
                    eprintln!(
                        "mem-s3 watch: conn {} fd {} quiet: written {}, writes {}, last write {:?} ago, write pending {:?}, read pending {:?}, sendq {} {}",
                        s.id, s.fd.get(), s.written.get(), s.writes.get(), lw, wp,
                        s.read_pending.get().map(|t| now - t), send_queue(s.fd.get()), task(s, now)
                    );

                }
            }
        });
    }
}
