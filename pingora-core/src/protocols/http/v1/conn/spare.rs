//! Buffers and boxes an idle connection does not hold, kept per thread
//! for the next one (see [`Spare`]).

use super::*;

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
pub(super) fn spare_read_buffer() -> BytesMut {
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
pub(super) fn keep_spare_buffer(buf: BytesMut, write: bool) {
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

impl Conn {
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
    pub(super) fn refill(&mut self) {
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
    /// Give back the read buffer if nothing is left in it, and the write
    /// buffers: for a connection about to wait idle.
    pub(crate) fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            keep_spare_buffer(std::mem::take(&mut self.buf), false);
        }
        keep_spare_buffer(std::mem::take(&mut self.pending), true);
        self.queued = VecDeque::new();
    }
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
}
