//! Sending queued body while reading the peer, so that neither side
//! waits on the other.

use super::*;

impl Conn {
    /// Send the write queue while also reading the response header: `Sent`
    /// once the queue is out (and flushed), `Readable` once a whole header
    /// block (or the end of the stream) is in, so that reading it cannot
    /// wait on the peer.
    pub(crate) async fn drive_header(&mut self) -> Result<Progress> {
        let limit = self.opts.write_timeout;
        loop {
            let max = self.opts.max_header_bytes;
            let complete =
                crate::protocols::http::v1::chunked::find_header_end_from(&self.buf, 0, max)
                    .is_some();
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
}
