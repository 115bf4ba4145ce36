//! Reading: waiting for a request, header blocks, and body decoding.

use super::spare::{keep_spare_buffer, spare_read_buffer};
use super::*;

impl Conn {
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
            if let Some(end) =
                crate::protocols::http::v1::chunked::find_header_end_from(&self.buf, scanned, max)
            {
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
    pub(super) fn body_step(&mut self) -> Option<Result<Option<Bytes>>> {
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
}
