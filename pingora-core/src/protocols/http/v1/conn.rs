//! What the HTTP/1 client and server sessions share: the stream, read and
//! write buffers that an idle connection does not hold (a server
//! connection gives them back when it parks or waits idle without parking,
//! an upstream connection when it goes back to the pool, to a small
//! per-thread spare list), timed reads and writes, and the body reader and
//! writer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use pingora_error::{Error, ErrorType::*, OrErr, Result};
use pingora_timeout::Deadline;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::chunked::{ChunkedDecoder, Decoded};
use super::framing::Framing;
use super::H1Options;
use crate::protocols::http::Progress;
use crate::protocols::Stream;

/// First read of a header block into an empty buffer: most headers fit
/// (nginx's `client_header_buffer_size` is 1k too), and a 1 KiB block is
/// the largest the allocator serves from its per-thread cache.
const FIRST_HEADER_READ: usize = 1024;
/// Each later growth step of a header block that did not fit.
const HEADER_READ_SIZE: usize = 4096;
/// Read size for body bytes.
const BODY_READ_SIZE: usize = 16 * 1024;
/// Slices of a vectored write kept on the stack.
const INLINE_SLICES: usize = 8;
/// A written header buffer up to this size is kept for the next one.
const KEEP_PENDING: usize = 4096;
/// Spare buffers (and deadlines) kept per thread, of each kind (see
/// [`Spare`]).
const SPARE_MAX: usize = 16;
/// A spare buffer that grew past this is dropped rather than kept.
const SPARE_CAPACITY_MAX: usize = 4 * BODY_READ_SIZE;

/// Read and write buffers of connections that do not need them now (an
/// upstream connection back in the pool, a keep-alive client between
/// requests), and the state of finished upstream sessions (boxed, with
/// their write buffer and deadline), for the next connection on this
/// thread: an idle connection holds no buffer, and a busy proxy does not
/// allocate and free them for every request.
///
/// A read buffer may still be shared with a header block that is in use
/// (the header's fields are slices of it); it is handed out again only
/// once it is not, so reading into it never allocates, and splitting a
/// header block off it never allocates a share count either.
struct Spare {
    reads: Vec<BytesMut>,
    writes: Vec<BytesMut>,
    /// Finished upstream sessions' state, its stream [`Detached`].
    #[allow(clippy::vec_box)] // each is handed out as the session's box
    conns: Vec<Box<Conn>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare { reads: Vec::new(), writes: Vec::new(), conns: Vec::new() })
    };
}

/// The stream of a spare [`Conn`], which has none: reads end at once,
/// writes fail. Zero-sized, so boxing it as a `Stream` allocates nothing.
#[derive(Debug)]
struct Detached;

impl tokio::io::AsyncRead for Detached {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Detached {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl crate::protocols::IO for Detached {
    fn socket_digest(&self) -> Option<&crate::protocols::SocketDigest> {
        None
    }
}

/// A spare read buffer with room for a first header read, if this thread
/// has one that is not shared any more (the newest first); else an empty
/// one (it allocates when first read into).
fn spare_read_buffer() -> BytesMut {
    SPARE.with(|s| {
        let reads = &mut s.borrow_mut().reads;
        match reads
            .iter_mut()
            .rposition(|b| b.try_reclaim(FIRST_HEADER_READ))
        {
            Some(i) => reads.swap_remove(i),
            None => BytesMut::new(),
        }
    })
}

/// A spare write buffer, or an empty one.
fn spare_write_buffer() -> BytesMut {
    SPARE.with(|s| s.borrow_mut().writes.pop().unwrap_or_default())
}

/// Keep `buf` for [`spare_read_buffer`] (or [`spare_write_buffer`] with
/// `write`) when it is empty, has an allocation and did not grow large;
/// a full list drops its oldest.
fn keep_spare_buffer(buf: BytesMut, write: bool) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > SPARE_CAPACITY_MAX {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        let list = if write { &mut s.writes } else { &mut s.reads };
        if list.len() >= SPARE_MAX {
            list.remove(0);
        }
        list.push(buf);
    });
}

/// Run `$fut` under `$limit` on the moving deadline `$deadline` (see
/// [`Deadline`]): no timer is registered or removed per wait while the
/// deadline's one timer is due no later than this wait's end; a timeout
/// becomes `$etype`.
macro_rules! timed_on {
    ($deadline:expr, $limit:expr, $etype:expr, $what:expr, $fut:expr) => {
        match $deadline.timeout($limit, $fut).await {
            Ok(r) => r,
            Err(_) => pingora_error::Error::e_explain($etype, $what),
        }
    };
}
pub(crate) use timed_on;

/// [`timed_on!`] with `$conn`'s own deadline, for a future made by `$fut`
/// that borrows the whole connection: the deadline is taken out for the
/// wait and put back after (a cancelled wait drops its timer, and the next
/// one registers again).
macro_rules! conn_timed {
    ($conn:expr, $limit:expr, $etype:expr, $what:expr, $fut:expr) => {{
        let mut deadline = std::mem::take(&mut $conn.deadline);
        let r = $crate::protocols::http::v1::conn::timed_on!(deadline, $limit, $etype, $what, $fut);
        $conn.deadline = deadline;
        r
    }};
}
pub(crate) use conn_timed;

/// The body being read.
#[derive(Debug)]
pub(crate) enum BodyReader {
    /// Nothing (more) to read.
    Done,
    /// This many bytes left.
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// Until the peer closes (also the raw tunnel after an upgrade).
    UntilClose,
}

/// The body being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyWriter {
    /// No body may be written (or it is finished).
    Done,
    /// This many bytes still owed.
    Length(u64),
    Chunked,
    UntilClose,
}

pub(crate) struct Conn {
    pub(crate) stream: Stream,
    /// Received bytes not yet consumed. Empty with no allocation when the
    /// connection is idle.
    pub(crate) buf: BytesMut,
    /// A header serialized but not yet sent, to go out with the first body
    /// bytes in one write.
    pub(crate) pending: BytesMut,
    /// Framed body pieces queued by `queue_body`, sent after `pending`:
    /// the body's own `Bytes`, not copies.
    pub(crate) queued: VecDeque<Bytes>,
    pub(crate) opts: H1Options,
    pub(crate) reader: BodyReader,
    pub(crate) writer: BodyWriter,
    /// Body bytes read so far (decoded) for this message.
    pub(crate) body_read: u64,
    /// Body bytes written so far for this message.
    pub(crate) body_written: u64,
    pub(crate) trailers: Option<Box<HeaderMap>>,
    /// Body-size limit for what is read; errors with `BodyTooLarge`.
    pub(crate) read_limit: Option<u64>,
    /// The peer closed its side (read returned 0).
    pub(crate) eof: bool,
    /// The one timer behind every timed read and write.
    pub(crate) deadline: Deadline,
}

impl Conn {
    pub(crate) fn new(stream: Stream, opts: H1Options) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
            pending: BytesMut::new(),
            queued: VecDeque::new(),
            opts,
            reader: BodyReader::Done,
            writer: BodyWriter::Done,
            body_read: 0,
            body_written: 0,
            trailers: None,
            read_limit: None,
            eof: false,
            deadline: Deadline::new(),
        }
    }

    /// A boxed connection for an upstream session: a finished session's
    /// box if this thread has one (with its write buffer and deadline),
    /// else a new one with spare buffers; either way with a spare read
    /// buffer.
    pub(crate) fn with_spare_buffers(stream: Stream, opts: H1Options) -> Box<Self> {
        let mut conn = match SPARE.with(|s| s.borrow_mut().conns.pop()) {
            Some(mut conn) => {
                conn.stream = stream;
                conn.opts = opts;
                conn
            }
            None => {
                let mut conn = Box::new(Conn::new(stream, opts));
                conn.pending = spare_write_buffer();
                conn
            }
        };
        conn.buf = spare_read_buffer();
        conn
    }

    /// The stream. When this connection's buffers are empty, its read
    /// buffer is left for the next connection on this thread (see
    /// [`Spare`]) and the rest (box, write buffer, deadline) for the next
    /// [`with_spare_buffers`](Self::with_spare_buffers): the deadline's
    /// timer goes along, so the next upstream session moves it instead of
    /// registering its own.
    pub(crate) fn keep_buffers_spare(mut self: Box<Self>) -> Stream {
        if !self.buf.is_empty() || !self.pending.is_empty() {
            return self.stream;
        }
        // Every field named (no `..`): a field added later must be reset
        // here too, or this stops compiling.
        let Conn {
            stream,
            buf,
            pending,
            queued,
            opts: _,
            reader,
            writer,
            body_read,
            body_written,
            trailers,
            read_limit,
            eof,
            deadline: _,
        } = &mut *self;
        keep_spare_buffer(std::mem::take(buf), false);
        if pending.capacity() > SPARE_CAPACITY_MAX {
            *pending = BytesMut::new();
        }
        let stream = std::mem::replace(stream, Box::new(Detached));
        *reader = BodyReader::Done;
        *writer = BodyWriter::Done;
        queued.clear();
        *body_read = 0;
        *body_written = 0;
        *trailers = None;
        *read_limit = None;
        *eof = false;
        SPARE.with(|s| {
            let conns = &mut s.borrow_mut().conns;
            if conns.len() < SPARE_MAX {
                conns.push(self);
            }
        });
        stream
    }

    /// Make sure the read buffer has an allocation to read into: a spare
    /// one when it has none.
    fn refill(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = spare_read_buffer();
        }
    }

    /// The write buffer, for a header to be written into: a spare one when
    /// it has no allocation.
    pub(crate) fn pending_mut(&mut self) -> &mut BytesMut {
        if self.pending.capacity() == 0 {
            self.pending = spare_write_buffer();
        }
        &mut self.pending
    }

    /// Wait until the peer sends something, and read it (nothing to do if
    /// bytes are buffered): one readiness check per wake-up, where waiting
    /// for readiness and then reading took two. With `release`, the read
    /// buffer goes back to the thread's spares whenever the read finds
    /// nothing, so that a connection waiting idle holds none.
    pub(crate) async fn read_when_readable(
        &mut self,
        limit: Option<Duration>,
        release: bool,
    ) -> Result<()> {
        if !self.buf.is_empty() {
            return Ok(());
        }
        let (stream, buf, eof) = (&mut self.stream, &mut self.buf, &mut self.eof);
        let read = poll_fn(move |cx| {
            if buf.capacity() == 0 {
                *buf = spare_read_buffer();
            }
            if buf.capacity() - buf.len() < FIRST_HEADER_READ / 2 {
                buf.reserve(FIRST_HEADER_READ);
            }
            let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
            let n = match Pin::new(&mut **stream).poll_read(cx, &mut rb) {
                Poll::Pending => None,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Error::e_because(ReadError, "waiting for a request", e))
                }
                Poll::Ready(Ok(())) => Some(rb.filled().len()),
            };
            let Some(n) = n else {
                if release && buf.is_empty() {
                    keep_spare_buffer(std::mem::take(buf), false);
                }
                return Poll::Pending;
            };
            // SAFETY: `poll_read` initialized these `n` bytes of the spare
            // capacity (`filled`).
            unsafe { buf.set_len(buf.len() + n) };
            if n == 0 {
                *eof = true;
            }
            Poll::Ready(Ok(()))
        });
        timed_on!(
            self.deadline,
            limit,
            ReadTimedout,
            "idle connection timed out",
            read
        )
    }

    /// Ready once the peer has closed or reset the connection (or it
    /// failed). Asks the socket's readiness first, so a quiet connection
    /// costs no system call. Bytes that arrive instead (a pipelined
    /// request, early tunnel data) are kept in the buffer for the next
    /// read, and then this stays pending for good: the peer is still
    /// there. Bounded: at most one read of [`HEADER_READ_SIZE`] bytes.
    pub(crate) fn poll_peer_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.eof {
            return Poll::Ready(());
        }
        if !self.buf.is_empty() {
            return Poll::Pending; // never to be woken: the peer is there
        }
        match self.stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        self.refill();
        self.buf.reserve(HEADER_READ_SIZE);
        let spare = self.buf.spare_capacity_mut();
        let room = HEADER_READ_SIZE.min(spare.len());
        let mut rb = ReadBuf::uninit(&mut spare[..room]);
        match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(()),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.eof = true;
                    return Poll::Ready(());
                }
                // SAFETY: `poll_read` initialized the first `n` bytes of
                // the spare capacity (`filled`).
                unsafe { self.buf.set_len(self.buf.len() + n) };
                Poll::Pending
            }
        }
    }

    /// Read more bytes into the buffer; returns how many (0 at EOF).
    pub(crate) async fn read_more(&mut self, want: usize) -> Result<usize> {
        self.refill();
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .or_err(ReadError, "reading from the connection")?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Read until `buf` holds a whole header block, at most `max` bytes.
    /// `first_line_limit`, when given, makes a request line that is still
    /// unfinished past that many bytes a 414. Returns a length that holds
    /// the whole block: its exact end, or (when the buffer ends with an
    /// empty line) the buffer's length; the parser finds the exact end.
    ///
    /// With `optimistic`, whatever the first read brought (up to `max`) is
    /// returned as is, for the parser to try: a response header usually
    /// arrives whole, with body bytes after it, in one read, and the parser
    /// finds its end without a separate scan. If the parser finds it
    /// incomplete, the caller asks again without `optimistic`.
    pub(crate) async fn fill_header(
        &mut self,
        first_line_limit: Option<usize>,
        optimistic: bool,
    ) -> Result<Option<usize>> {
        let max = self.opts.max_header_bytes;
        let mut scanned = 0;
        if self.eof && self.buf.is_empty() {
            return Ok(None);
        }
        loop {
            // Empty lines before a message are skipped (RFC 9112 §2.2).
            while self.buf.first() == Some(&b'\n') || self.buf.starts_with(b"\r\n") {
                let n = if self.buf[0] == b'\n' { 1 } else { 2 };
                let _ = self.buf.split_to(n);
                scanned = 0;
            }
            // Common case: one read brought the whole header and nothing
            // after it. The parser finds the exact end; skip the scan.
            if scanned == 0 && self.buf.len() <= max && self.buf.ends_with(b"\r\n\r\n") {
                return Ok(Some(self.buf.len()));
            }
            if optimistic && !self.buf.is_empty() {
                return Ok(Some(self.buf.len().min(max)));
            }
            if let Some(end) = super::chunked::find_header_end_from(&self.buf, scanned, max) {
                return Ok(Some(end));
            }
            scanned = self.buf.len();
            if let Some(limit) = first_line_limit {
                if self.buf.len() > limit && !self.buf[..limit].contains(&b'\n') {
                    return Error::e_explain(UriTooLong, "request line too long");
                }
            }
            if self.buf.len() >= max {
                return Error::e_explain(HeaderTooLarge, "header block too large");
            }
            let step = if self.buf.is_empty() {
                FIRST_HEADER_READ
            } else {
                HEADER_READ_SIZE
            };
            let room = (max - self.buf.len()).min(step);
            if self.read_more(room.max(1)).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Error::e_explain(ConnectionClosed, "connection closed inside a header");
            }
        }
    }

    /// Set up reading a body delimited by `framing`.
    pub(crate) fn start_body(&mut self, framing: Framing) {
        self.body_read = 0;
        self.trailers = None;
        self.reader = match framing {
            Framing::None => BodyReader::Done,
            Framing::Length(n) => BodyReader::Length(n),
            Framing::Chunked => BodyReader::Chunked(Box::new(ChunkedDecoder::new(
                self.opts.max_chunk_line,
                self.opts.max_header_bytes,
                self.opts.max_headers,
            ))),
            Framing::UntilClose => BodyReader::UntilClose,
        };
    }

    /// Decode a copy of the chunked body bytes already buffered, to find a
    /// framing error before anything else happens (the real decode runs
    /// again as the body is read). Stops at the end of the buffered bytes
    /// or of the body.
    pub(crate) fn check_buffered_chunks(&self) -> Result<()> {
        let mut copy = BytesMut::from(&self.buf[..]);
        let mut dec = ChunkedDecoder::new(
            self.opts.max_chunk_line,
            self.opts.max_header_bytes,
            self.opts.max_headers,
        );
        loop {
            match dec.decode(&mut copy)? {
                Decoded::Data(_) => continue,
                Decoded::NeedMore | Decoded::Done => return Ok(()),
            }
        }
    }

    pub(crate) fn body_done(&self) -> bool {
        matches!(self.reader, BodyReader::Done)
    }

    fn count(&mut self, data: Bytes) -> Result<Option<Bytes>> {
        self.body_read += data.len() as u64;
        if let Some(limit) = self.read_limit {
            if self.body_read > limit {
                self.reader = BodyReader::Done;
                return Error::e_explain(BodyTooLarge, "request body larger than the limit");
            }
        }
        Ok(Some(data))
    }

    /// One step of body decoding from the buffer alone: `Some` once a
    /// piece, the end or an error is decided, `None` when more bytes must
    /// be read first.
    fn body_step(&mut self) -> Option<Result<Option<Bytes>>> {
        match &mut self.reader {
            BodyReader::Done => Some(Ok(None)),
            BodyReader::Length(left) => {
                if !self.buf.is_empty() {
                    let n = (self.buf.len() as u64).min(*left) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.reader = BodyReader::Done;
                    }
                    let data = self.buf.split_to(n).freeze();
                    return Some(self.count(data));
                }
                if self.eof {
                    self.reader = BodyReader::Done;
                    return Some(Error::e_explain(
                        ConnectionClosed,
                        "connection closed inside a body",
                    ));
                }
                None
            }
            BodyReader::Chunked(dec) => match dec.decode(&mut self.buf) {
                Err(e) => Some(Err(e)),
                Ok(Decoded::Data(d)) => Some(self.count(d)),
                Ok(Decoded::Done) => {
                    self.trailers = dec.take_trailers().map(Box::new);
                    self.reader = BodyReader::Done;
                    Some(Ok(None))
                }
                Ok(Decoded::NeedMore) if self.eof => {
                    self.reader = BodyReader::Done;
                    Some(Error::e_explain(
                        ConnectionClosed,
                        "connection closed inside a chunked body",
                    ))
                }
                Ok(Decoded::NeedMore) => None,
            },
            BodyReader::UntilClose => {
                if !self.buf.is_empty() {
                    let data = self.buf.split().freeze();
                    return Some(self.count(data));
                }
                if self.eof {
                    self.reader = BodyReader::Done;
                    return Some(Ok(None));
                }
                None
            }
        }
    }

    /// The next piece of body, or `None` when it is complete.
    pub(crate) async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let limit = self.opts.body_read_timeout;
        loop {
            if let Some(step) = self.body_step() {
                return step;
            }
            let want = match self.reader {
                BodyReader::Length(left) => left.min(BODY_READ_SIZE as u64) as usize,
                _ => BODY_READ_SIZE,
            };
            conn_timed!(
                self,
                limit,
                ReadTimedout,
                "body read timed out",
                self.read_more(want)
            )?;
        }
    }

    /// Read and drop the rest of the body, up to `budget` bytes. True if the
    /// body ended within the budget.
    pub(crate) async fn drain_body(&mut self, budget: u64) -> bool {
        let mut seen = 0u64;
        while seen <= budget {
            match self.read_body().await {
                Ok(Some(d)) => seen += d.len() as u64,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Give back the read buffer if nothing is left in it, and the write
    /// buffers: for a connection about to wait idle.
    pub(crate) fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            keep_spare_buffer(std::mem::take(&mut self.buf), false);
        }
        keep_spare_buffer(std::mem::take(&mut self.pending), true);
        self.queued = VecDeque::new();
    }

    /// Write `pending`, the queue and then `parts` as one vectored write.
    /// `pending`'s allocation is kept for the next header when it is small.
    pub(crate) async fn write_parts(&mut self, parts: &[&[u8]]) -> Result<()> {
        let limit = self.opts.write_timeout;
        let pending = std::mem::take(&mut self.pending);
        let queued = std::mem::take(&mut self.queued);
        let stream = &mut self.stream;
        let write = async move {
            let all = std::iter::once(&pending[..])
                .chain(queued.iter().map(|q| &q[..]))
                .chain(parts.iter().copied())
                .filter(|p| !p.is_empty())
                .map(IoSlice::new);
            // The usual few slices on the stack; a long queue on the heap.
            let mut inline = [IoSlice::new(&[]); INLINE_SLICES];
            let mut heap = Vec::new();
            let mut bufs = if 1 + queued.len() + parts.len() <= INLINE_SLICES {
                let mut n = 0;
                for (slot, s) in inline.iter_mut().zip(all) {
                    *slot = s;
                    n += 1;
                }
                &mut inline[..n]
            } else {
                heap.extend(all);
                &mut heap[..]
            };
            while !bufs.is_empty() {
                let n = stream
                    .write_vectored(bufs)
                    .await
                    .or_err(WriteError, "writing to the connection")?;
                if n == 0 {
                    return Error::e_explain(WriteError, "connection wrote zero bytes");
                }
                IoSlice::advance_slices(&mut bufs, n);
            }
            Ok(pending)
        };
        let mut pending = timed_on!(
            self.deadline,
            limit,
            WriteTimedout,
            "write timed out",
            write
        )?;
        if pending.capacity() <= KEEP_PENDING {
            pending.clear();
            self.pending = pending;
        }
        Ok(())
    }

    /// Send whatever is pending and flush the stream.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.has_queued() {
            self.write_parts(&[]).await?;
        }
        let limit = self.opts.write_timeout;
        let stream = &mut self.stream;
        let flush = async move {
            stream
                .flush()
                .await
                .or_err(WriteError, "flushing the connection")
        };
        timed_on!(
            self.deadline,
            limit,
            WriteTimedout,
            "write timed out",
            flush
        )
    }

    /// Set up writing a body delimited by `framing`.
    pub(crate) fn start_write(&mut self, framing: Framing) {
        self.body_written = 0;
        self.writer = match framing {
            Framing::None | Framing::Length(0) => BodyWriter::Done,
            Framing::Length(n) => BodyWriter::Length(n),
            Framing::Chunked => BodyWriter::Chunked,
            Framing::UntilClose => BodyWriter::UntilClose,
        };
    }

    /// Write body bytes in the current framing.
    pub(crate) async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.writer {
            BodyWriter::Done => Error::e_explain(H1Error, "no body may be written now"),
            BodyWriter::Length(left) => {
                if data.len() as u64 > left {
                    return Error::e_explain(H1Error, "body longer than its Content-Length");
                }
                self.writer = BodyWriter::Length(left - data.len() as u64);
                self.body_written += data.len() as u64;
                self.write_parts(&[data]).await
            }
            BodyWriter::Chunked => {
                let mut head = [0u8; 18];
                let n = chunk_head(data.len(), &mut head);
                self.body_written += data.len() as u64;
                self.write_parts(&[&head[..n], data, b"\r\n"]).await
            }
            BodyWriter::UntilClose => {
                self.body_written += data.len() as u64;
                self.write_parts(&[data]).await
            }
        }
    }

    /// End the body: the last chunk and `trailers` for chunked; an error if
    /// a Content-Length body is short. Flushes.
    pub(crate) async fn finish_body(&mut self, trailers: Option<&HeaderMap>) -> Result<()> {
        let ended = self.queue_finish(trailers);
        self.flush().await?;
        ended
    }

    /// Queue body bytes, framed, to be sent by `drive_*` (or the next
    /// write or flush). The data itself is queued, not copied.
    pub(crate) fn queue_body(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len();
        match self.writer {
            BodyWriter::Done => return Error::e_explain(H1Error, "no body may be written now"),
            BodyWriter::Length(left) => {
                if len as u64 > left {
                    return Error::e_explain(H1Error, "body longer than its Content-Length");
                }
                self.writer = BodyWriter::Length(left - len as u64);
                self.queued.push_back(data);
            }
            BodyWriter::Chunked => {
                let mut head = [0u8; 18];
                let n = chunk_head(len, &mut head);
                self.queued.push_back(Bytes::copy_from_slice(&head[..n]));
                self.queued.push_back(data);
                self.queued.push_back(Bytes::from_static(b"\r\n"));
            }
            BodyWriter::UntilClose => self.queued.push_back(data),
        }
        self.body_written += len as u64;
        Ok(())
    }

    /// Queue the end of the body: the last chunk and `trailers` when
    /// chunked. An error if a Content-Length body is short.
    pub(crate) fn queue_finish(&mut self, trailers: Option<&HeaderMap>) -> Result<()> {
        let writer = std::mem::replace(&mut self.writer, BodyWriter::Done);
        match writer {
            BodyWriter::Chunked => {
                let mut tail = BytesMut::with_capacity(64);
                tail.put_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    tail.put_slice(name.as_str().as_bytes());
                    tail.put_slice(b": ");
                    tail.put_slice(value.as_bytes());
                    tail.put_slice(b"\r\n");
                }
                tail.put_slice(b"\r\n");
                self.queued.push_back(tail.freeze());
                Ok(())
            }
            BodyWriter::Length(left) if left > 0 => {
                Error::e_explain(H1Error, "body shorter than its Content-Length")
            }
            _ => Ok(()),
        }
    }

    /// Send the write queue while also reading the response header: `Sent`
    /// once the queue is out (and flushed), `Readable` once a whole header
    /// block (or the end of the stream) is in, so that reading it cannot
    /// wait on the peer.
    pub(crate) async fn drive_header(&mut self) -> Result<Progress> {
        let limit = self.opts.write_timeout;
        loop {
            let max = self.opts.max_header_bytes;
            let complete = super::chunked::find_header_end_from(&self.buf, 0, max).is_some();
            if self.eof || complete || self.buf.len() >= max {
                return Ok(Progress::Readable);
            }
            if self.drive_step(limit).await? == Progress::Sent {
                return Ok(Progress::Sent);
            }
        }
    }

    /// Send the write queue while also reading the body: `Some` with the
    /// next piece (or the end) as soon as one is decoded, `None` once the
    /// queue is out. Neither side then waits on the other.
    pub(crate) async fn drive_body(&mut self) -> Result<Option<Option<Bytes>>> {
        let limit = self.opts.write_timeout;
        loop {
            if let Some(step) = self.body_step() {
                return step.map(Some);
            }
            if self.drive_step(limit).await? == Progress::Sent {
                return Ok(None);
            }
        }
    }

    /// One wait of [`poll_drive`](Self::poll_drive) under the write
    /// timeout, on the connection's deadline.
    async fn drive_step(&mut self, limit: Option<Duration>) -> Result<Progress> {
        conn_timed!(
            self,
            limit,
            WriteTimedout,
            "write timed out",
            poll_fn(|cx| self.poll_drive(cx))
        )
    }

    /// Write what is queued; meanwhile read into the buffer. Ready with
    /// `Sent` when the queue is out and flushed, `Readable` when bytes (or
    /// the end) arrived.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Progress>> {
        while self.has_queued() {
            let mut slices = [IoSlice::new(&[]); 33];
            let mut used = 0;
            if !self.pending.is_empty() {
                slices[0] = IoSlice::new(&self.pending);
                used = 1;
            }
            for q in self.queued.iter().take(slices.len() - used) {
                slices[used] = IoSlice::new(q);
                used += 1;
            }
            match Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..used]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Error::e_explain(WriteError, "connection wrote zero bytes"))
                }
                Poll::Ready(Ok(mut n)) => {
                    let p = n.min(self.pending.len());
                    self.pending.advance(p);
                    n -= p;
                    while n > 0 {
                        let Some(front) = self.queued.front_mut() else {
                            break;
                        };
                        let k = n.min(front.len());
                        front.advance(k);
                        n -= k;
                        if front.is_empty() {
                            self.queued.pop_front();
                        }
                    }
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Error::e_because(
                        WriteError,
                        "writing to the connection",
                        e,
                    ))
                }
                Poll::Pending => break,
            }
        }
        if !self.has_queued() {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(Progress::Sent)),
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Error::e_because(WriteError, "flushing the connection", e))
                }
                Poll::Pending => {}
            }
        }
        if self.eof {
            return Poll::Ready(Ok(Progress::Readable));
        }
        self.refill();
        self.buf.reserve(BODY_READ_SIZE);
        let mut rb = ReadBuf::uninit(self.buf.spare_capacity_mut());
        match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                // SAFETY: `poll_read` initialized these `n` bytes of the
                // spare capacity.
                unsafe { self.buf.set_len(self.buf.len() + n) };
                if n == 0 {
                    self.eof = true;
                }
                Poll::Ready(Ok(Progress::Readable))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Error::e_because(
                ReadError,
                "reading from the connection",
                e,
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether body bytes wait in the write queue.
    pub(crate) fn has_queued(&self) -> bool {
        !self.pending.is_empty() || !self.queued.is_empty()
    }
}

/// `{len:x}\r\n` into `out`; returns its length.
fn chunk_head(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::v1::client::HttpSession;
    use crate::protocols::mem::MemStream;
    use pingora_http::RequestHeader;

    /// An upstream exchange on a stream whose peer answers `resp`.
    fn exchange(resp: &'static [u8]) -> HttpSession {
        let (stream, _) = MemStream::new(resp, 1024);
        let mut s = HttpSession::new(Box::new(stream));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let req = RequestHeader::build("GET", b"/", None).unwrap();
            s.write_request_header(Box::new(req)).await.unwrap();
            s.read_response().await.unwrap();
            while s.read_body_bytes().await.unwrap().is_some() {}
        });
        s
    }

    fn spare_counts() -> (usize, usize, usize) {
        SPARE.with(|s| {
            let s = s.borrow();
            (s.reads.len(), s.writes.len(), s.conns.len())
        })
    }

    fn clear_spare() {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            s.reads.clear();
            s.writes.clear();
            s.conns.clear();
        });
    }

    #[test]
    fn pooled_connections_leave_their_buffers_to_the_next_session() {
        clear_spare();
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let s = exchange(ok);
        let stream = s.reuse().expect("reusable");
        // The read buffer on its own; the box keeps the write buffer.
        assert_eq!(spare_counts(), (1, 0, 1));
        // The next session on this thread starts with them.
        let next = Conn::with_spare_buffers(stream, H1Options::default());
        assert!(next.buf.capacity() > 0 && next.buf.is_empty());
        assert!(next.pending.capacity() > 0 && next.pending.is_empty());
        assert_eq!(spare_counts(), (0, 0, 0));
        // A connection that cannot be reused keeps nothing back.
        let s = exchange(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        assert!(s.reuse().is_none());
        assert_eq!(spare_counts(), (0, 0, 0));
        // The lists are bounded: many sessions ending at once leave at most
        // SPARE_MAX of each.
        let done: Vec<_> = (0..SPARE_MAX + 5).map(|_| exchange(ok)).collect();
        for s in done {
            s.reuse().expect("reusable");
        }
        assert_eq!(spare_counts(), (SPARE_MAX, 0, SPARE_MAX));
    }

    #[test]
    fn a_shared_spare_buffer_waits_until_its_header_is_gone() {
        clear_spare();
        let mut buf = BytesMut::with_capacity(FIRST_HEADER_READ);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let header = buf.split().freeze();
        keep_spare_buffer(buf, false);
        // Still shared with `header`: not handed out, a new one instead.
        assert_eq!(spare_read_buffer().capacity(), 0);
        assert_eq!(spare_counts().0, 1);
        drop(header);
        // Not shared any more: handed out, with room, without allocating.
        let again = spare_read_buffer();
        assert!(again.capacity() >= FIRST_HEADER_READ);
        assert_eq!(spare_counts().0, 0);
    }

    #[test]
    fn chunk_heads() {
        let mut b = [0u8; 18];
        for n in [0usize, 1, 15, 16, 255, 4096, 123456789, usize::MAX] {
            let k = chunk_head(n, &mut b);
            assert_eq!(&b[..k], format!("{n:x}\r\n").as_bytes());
        }
    }
}
