//! Writing: vectored writes of the pending header with body, body
//! framing, and the write queue.

use super::*;

impl Conn {
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

    #[test]
    fn chunk_heads() {
        let mut b = [0u8; 18];
        for n in [0usize, 1, 15, 16, 255, 4096, 123456789, usize::MAX] {
            let k = chunk_head(n, &mut b);
            assert_eq!(&b[..k], format!("{n:x}\r\n").as_bytes());
        }
    }
}
