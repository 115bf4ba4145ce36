//! What the HTTP/1 client and server sessions share: the stream, read and
//! write buffers that an idle connection does not hold (a server
//! connection gives them back when it parks or waits idle without parking,
//! an upstream connection when it goes back to the pool, to a small
//! per-thread spare list), timed reads and writes, and the body reader and
//! writer.
//!
//! The connection's fields are private to this module and its parts:
//! `spare` (the per-thread spare buffers and boxes), `read` (header and
//! body reading), `write` (header and body writing) and `drive` (sending
//! queued body while reading); the sessions use the methods.

mod drive;
mod read;
mod spare;
mod write;

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
        let mut deadline = $conn.take_deadline();
        let r = $crate::protocols::http::v1::conn::timed_on!(deadline, $limit, $etype, $what, $fut);
        $conn.put_deadline(deadline);
        r
    }};
}
pub(crate) use conn_timed;

/// The body being read.
#[derive(Debug)]
enum BodyReader {
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
    stream: Stream,
    /// Received bytes not yet consumed. Empty with no allocation when the
    /// connection is idle.
    buf: BytesMut,
    /// A header serialized but not yet sent, to go out with the first body
    /// bytes in one write.
    pending: BytesMut,
    /// Framed body pieces queued by `queue_body`, sent after `pending`:
    /// the body's own `Bytes`, not copies.
    queued: VecDeque<Bytes>,
    opts: H1Options,
    reader: BodyReader,
    writer: BodyWriter,
    /// Body bytes read so far (decoded) for this message.
    body_read: u64,
    /// Body bytes written so far for this message.
    body_written: u64,
    trailers: Option<Box<HeaderMap>>,
    /// Body-size limit for what is read; errors with `BodyTooLarge`.
    read_limit: Option<u64>,
    /// The peer closed its side (read returned 0).
    eof: bool,
    /// The one timer behind every timed read and write.
    deadline: Deadline,
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

    /// The deadline, taken out for a wait whose future borrows the whole
    /// connection (see [`conn_timed!`]); [`put_deadline`](Self::put_deadline)
    /// gives it back.
    pub(crate) fn take_deadline(&mut self) -> Deadline {
        std::mem::take(&mut self.deadline)
    }

    /// Give back a deadline taken by [`take_deadline`](Self::take_deadline).
    pub(crate) fn put_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }

    /// The stream.
    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The stream, mutably (for a shutdown).
    pub(crate) fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The stream, and the bytes read but not consumed.
    pub(crate) fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Received bytes not yet consumed.
    pub(crate) fn buf(&self) -> &BytesMut {
        &self.buf
    }

    /// Received bytes not yet consumed, for a parser to split a header
    /// block off.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The limits and timeouts.
    pub(crate) fn opts(&self) -> &H1Options {
        &self.opts
    }

    /// The limits and timeouts, to change one.
    pub(crate) fn opts_mut(&mut self) -> &mut H1Options {
        &mut self.opts
    }

    /// The limit on body bytes read (a `BodyTooLarge` error past it).
    pub(crate) fn set_read_limit(&mut self, limit: Option<u64>) {
        self.read_limit = limit;
    }

    /// From now on the connection is a raw byte stream both ways (an
    /// upgrade): read and write until close, with no body limit.
    pub(crate) fn become_tunnel(&mut self) {
        self.reader = BodyReader::UntilClose;
        self.read_limit = None;
        self.start_write(Framing::UntilClose);
    }

    /// No (more) body may be written for this message.
    pub(crate) fn stop_writing(&mut self) {
        self.writer = BodyWriter::Done;
    }

    /// The body writer's state.
    pub(crate) fn writer(&self) -> BodyWriter {
        self.writer
    }

    /// Whether a Content-Length body still owes bytes.
    pub(crate) fn owes_body(&self) -> bool {
        matches!(self.writer, BodyWriter::Length(n) if n > 0)
    }

    /// Body bytes read so far (decoded) for this message.
    pub(crate) fn body_read(&self) -> u64 {
        self.body_read
    }

    /// Body bytes written so far for this message.
    pub(crate) fn body_written(&self) -> u64 {
        self.body_written
    }

    /// The trailers of a chunked body read to its end.
    pub(crate) fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_deref()
    }

    /// Bytes of a header serialized but not yet sent.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the peer closed its side (a read returned 0).
    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    /// Flush, then close without losing what was written (see
    /// [`crate::protocols::close_lingering`]).
    pub(crate) async fn close_lingering(&mut self) {
        let _ = self.flush().await;
        crate::protocols::close_lingering(&mut self.stream, &mut self.buf).await;
    }

    /// Whether body bytes wait in the write queue.
    pub(crate) fn has_queued(&self) -> bool {
        !self.pending.is_empty() || !self.queued.is_empty()
    }
}
