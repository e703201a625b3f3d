//! The data path's pipe: a GET response body turned into a PUT or UploadPart request body.
//!
//! [`PipeBody`] is the heart of the data path: it turns a GET response body into a PUT (or
//! UploadPart) request body. hyper splits the GET body's frames off its read buffer as
//! `Bytes`; they are handed unchanged to the PUT connection, which writes them with `writev`.
//! No byte is copied in user space, CRC32C runs over each frame as it passes, and the PUT
//! side only pulls the next frame once the previous one was written, so the bytes in flight
//! per transfer are bounded by hyper's read buffer and the sockets' buffers. A pipe whose
//! owner is gone (its task stopped) fails instead of sending on.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::checksum;
use super::error::BodyError;
use super::http::RespBody;

/// What a finished pipe reports: the CRC32C of every byte that went through.
#[derive(Clone, Default)]
pub struct PipeResult(Rc<Cell<Option<u32>>>);

impl PipeResult {
    pub fn crc32c(&self) -> Option<u32> {
        self.0.get()
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum PipeState {
    /// Plain body, or aws-chunked between chunks.
    Header,
    Data,
    Crlf,
    /// Everything emitted; drain the source so its connection can be reused.
    Drain,
    Done,
}

/// Streams a GET body into a request body (see the module doc), optionally framed as
/// `aws-chunked` with a CRC32C trailer.
pub struct PipeBody {
    src: RespBody,
    len: u64,
    passed: u64,
    crc: u32,
    expected: Option<u32>,
    result: PipeResult,
    progress: Vec<Arc<AtomicU64>>,
    chunk: Option<Chunking>,
    encoded_len: u64,
    pending: Option<Bytes>,
    state: PipeState,
    /// The shard's share of a bandwidth limit, and the timer of a wait for it.
    limit: Option<Rc<crate::bandwidth::ShardLimit>>,
    sleep: Option<glommio::timer::Timer>,
    /// Admitted by the limit: a frame's tokens are held until the frame arrives.
    reserved: bool,
}

struct Chunking {
    size: u64,
    header: Bytes,
    left: u64,
}

/// Fixed size of aws-chunked chunks; the encoded length must be known before sending.
pub const AWS_CHUNK_SIZE: u64 = 64 * 1024;
const TRAILER_NAME: &str = "x-amz-checksum-crc32c";

/// Length of an aws-chunked body with a CRC32C trailer, for `len` payload bytes.
pub fn aws_chunked_len(len: u64, chunk: u64) -> u64 {
    let full = len / chunk;
    let rem = len % chunk;
    let hexlen = |n: u64| format!("{n:x}").len() as u64;
    let mut total = full * (hexlen(chunk) + 2 + chunk + 2);
    if rem > 0 {
        total += hexlen(rem) + 2 + rem + 2;
    }
    // "0\r\n" + "x-amz-checksum-crc32c:" + base64(4 bytes) + "\r\n" + "\r\n"
    total + 3 + TRAILER_NAME.len() as u64 + 1 + 8 + 2 + 2
}

impl PipeBody {
    /// `len` is the exact number of bytes the source body will deliver; `expected` the
    /// source's CRC32C of them when known (a mismatch aborts the request before its last
    /// byte is sent, so the destination never completes a corrupt object).
    pub fn new(
        src: RespBody,
        len: u64,
        expected: Option<u32>,
        aws_chunked: bool,
        progress: Vec<Arc<AtomicU64>>,
    ) -> (Self, PipeResult) {
        let result = PipeResult::default();
        let (chunk, encoded_len) = if aws_chunked {
            let header = Bytes::from(format!("{AWS_CHUNK_SIZE:x}\r\n"));
            (
                Some(Chunking {
                    size: AWS_CHUNK_SIZE,
                    header,
                    left: 0,
                }),
                aws_chunked_len(len, AWS_CHUNK_SIZE),
            )
        } else {
            (None, len)
        };
        let body = Self {
            src,
            len,
            passed: 0,
            crc: 0,
            expected,
            result: result.clone(),
            progress,
            chunk,
            encoded_len,
            pending: None,
            state: PipeState::Header,
            limit: None,
            sleep: None,
            reserved: false,
        };
        (body, result)
    }

    /// Holds each frame until the shard's share of a bandwidth limit admits it.
    pub fn with_limit(mut self, limit: Option<Rc<crate::bandwidth::ShardLimit>>) -> Self {
        self.limit = limit;
        self
    }

    /// Ready once the bandwidth limit (if any) admits the next frame.
    fn poll_limit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(limit) = &self.limit else {
            return Poll::Ready(());
        };
        if self.reserved {
            return Poll::Ready(());
        }
        loop {
            if let Some(t) = &mut self.sleep {
                ready!(std::future::Future::poll(Pin::new(t), cx));
                self.sleep = None;
            }
            match limit.wait() {
                None => {
                    limit.reserve();
                    self.reserved = true;
                    return Poll::Ready(());
                }
                Some(d) => self.sleep = Some(glommio::timer::Timer::new(d)),
            }
        }
    }

    fn next_src(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        if let Some(b) = self.pending.take() {
            return Poll::Ready(Ok(Some(b)));
        }
        ready!(self.poll_limit(cx));
        let next = ready!(self.src.poll_data(cx));
        if let (Some(l), true) = (&self.limit, self.reserved) {
            l.settle(match &next {
                Some(Ok(b)) => Some(b.len() as u64),
                _ => None,
            });
            self.reserved = false;
        }
        match next {
            Some(Ok(b)) => Poll::Ready(Ok(Some(b))),
            Some(Err(e)) => Poll::Ready(Err(BodyError::Source {
                retryable: e.is_retryable(),
                message: e.to_string(),
            })),
            None => Poll::Ready(Ok(None)),
        }
    }

    fn account(&mut self, b: &Bytes) -> Result<(), BodyError> {
        let n = b.len() as u64;
        if self.passed + n > self.len {
            return Err(BodyError::Long { expected: self.len });
        }
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.passed += n;
        for p in &self.progress {
            p.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Called once every byte has been seen, before the last one is released.
    fn finish(&mut self) -> Result<(), BodyError> {
        if let Some(exp) = self.expected {
            if exp != self.crc {
                return Err(BodyError::Checksum {
                    expected: checksum::encode(exp),
                    actual: checksum::encode(self.crc),
                });
            }
        }
        self.result.0.set(Some(self.crc));
        Ok(())
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.abandoned() {
            self.state = PipeState::Done;
            return Poll::Ready(Some(Err(BodyError::Abandoned)));
        }
        match self.poll_inner(cx) {
            Poll::Ready(Err(e)) => {
                self.state = PipeState::Done;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(Some(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        match self.state {
            PipeState::Done => Poll::Ready(Ok(None)),
            PipeState::Drain => match ready!(self.next_src(cx))? {
                Some(_) => Poll::Ready(Err(BodyError::Long { expected: self.len })),
                None => {
                    self.state = PipeState::Done;
                    Poll::Ready(Ok(None))
                }
            },
            PipeState::Header if self.chunk.is_none() => self.poll_plain(cx),
            PipeState::Header => Poll::Ready(self.chunk_header()),
            PipeState::Data => self.poll_chunk_data(cx),
            PipeState::Crlf => {
                self.state = PipeState::Header;
                Poll::Ready(Ok(Some(Bytes::from_static(b"\r\n"))))
            }
        }
    }

    fn short(&self) -> BodyError {
        BodyError::Short {
            got: self.passed,
            expected: self.len,
        }
    }

    /// A plain body: the source's next frame as it is.
    #[inline]
    fn poll_plain(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        if self.passed == self.len {
            self.finish()?;
            self.state = PipeState::Drain;
            return self.poll_inner(cx);
        }
        let Some(b) = ready!(self.next_src(cx))? else {
            return Poll::Ready(Err(self.short()));
        };
        self.account(&b)?;
        if self.passed == self.len {
            self.finish()?;
            self.state = PipeState::Drain;
        }
        Poll::Ready(Ok(Some(b)))
    }

    /// aws-chunked: the next chunk's header, or the final chunk and the CRC32C trailer.
    fn chunk_header(&mut self) -> Result<Option<Bytes>, BodyError> {
        let left = self.len - self.passed;
        if left == 0 {
            self.finish()?;
            self.state = PipeState::Drain;
            let trailer = format!("0\r\n{TRAILER_NAME}:{}\r\n\r\n", checksum::encode(self.crc));
            return Ok(Some(Bytes::from(trailer)));
        }
        let ch = self.chunk.as_mut().expect("chunked");
        let n = left.min(ch.size);
        ch.left = n;
        self.state = PipeState::Data;
        let header = if n == ch.size {
            ch.header.clone()
        } else {
            Bytes::from(format!("{n:x}\r\n"))
        };
        Ok(Some(header))
    }

    /// aws-chunked: the chunk's data, a frame (split at the chunk's end) at a time.
    #[inline]
    fn poll_chunk_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        let Some(mut b) = ready!(self.next_src(cx))? else {
            return Poll::Ready(Err(self.short()));
        };
        let left = self.chunk.as_ref().expect("chunked").left;
        if b.len() as u64 > left {
            self.pending = Some(b.split_off(left as usize));
        }
        self.account(&b)?;
        let ch = self.chunk.as_mut().expect("chunked");
        ch.left -= b.len() as u64;
        if ch.left == 0 {
            self.state = PipeState::Crlf;
        }
        Poll::Ready(Ok(Some(b)))
    }
}

impl PipeBody {
    /// The request's owner dropped its [`PipeResult`] while bytes were still to be sent (its
    /// task was stopped: fenced at a rebalance, or abandoned at shutdown). The connection
    /// task that sends the body outlives it; failing the body makes it drop the request
    /// unfinished (the socket is reset), so a stale write never completes late.
    fn abandoned(&self) -> bool {
        let emitting = matches!(
            self.state,
            PipeState::Header | PipeState::Data | PipeState::Crlf
        );
        emitting && Rc::strong_count(&self.result.0) == 1
    }
}

impl Body for PipeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.state == PipeState::Done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.encoded_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_whose_owner_is_gone_fails_instead_of_sending_on() {
        let poll = |pipe: &mut PipeBody| {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            match Pin::new(pipe).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => Ok(f.into_data().map(|d| d.len()).unwrap_or(0)),
                Poll::Ready(Some(Err(e))) => Err(e.to_string()),
                other => panic!("{:?}", other.map(|o| o.is_some())),
            }
        };
        let frames =
            || RespBody::from_frames([Bytes::from_static(b"abc"), Bytes::from_static(b"def")]);
        let (mut kept, result) = PipeBody::new(frames(), 6, None, false, Vec::new());
        assert_eq!(poll(&mut kept), Ok(3));
        assert_eq!(poll(&mut kept), Ok(3));
        assert!(result.crc32c().is_some(), "every byte went through");
        let (mut dropped, result) = PipeBody::new(frames(), 6, None, false, Vec::new());
        assert_eq!(poll(&mut dropped), Ok(3));
        drop(result);
        let e = poll(&mut dropped).unwrap_err();
        assert!(e.contains("abandoned"), "{e}");
    }

    #[test]
    fn chunked_len_matches_encoding() {
        // 5 bytes "hello": "5\r\nhello\r\n0\r\nx-amz-checksum-crc32c:mnG7TA==\r\n\r\n"
        let enc = "5\r\nhello\r\n0\r\nx-amz-checksum-crc32c:mnG7TA==\r\n\r\n";
        assert_eq!(aws_chunked_len(5, AWS_CHUNK_SIZE), enc.len() as u64);
        let enc0 = "0\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n";
        assert_eq!(aws_chunked_len(0, AWS_CHUNK_SIZE), enc0.len() as u64);
        // two chunks of 4 and a rest of 1 with chunk size 4
        let enc = "4\r\nabcd\r\n4\r\nefgh\r\n1\r\ni\r\n0\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n";
        assert_eq!(aws_chunked_len(9, 4), enc.len() as u64);
    }
}
