//! [`Http2Session`]: one request and its response on an [`H2Connection`].

use super::*;

/// Names the type; its state is not shown.
impl std::fmt::Debug for Http2Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Session").finish_non_exhaustive()
    }
}

/// One request and its response on an [`H2Connection`]. The state is
/// boxed: a session moves between the connector, the proxy and its end
/// on every request, and [`ClientSession`](crate::protocols::http::client::HttpSession)
/// (which holds one) is only as small as its largest kind.
pub struct Http2Session(Box<StreamState>);

/// What an [`Http2Session`] keeps.
struct StreamState {
    send_req: Option<SendRequest<Bytes>>,
    conn: H2Connection,
    response: Option<ResponseFuture>,
    body_out: Option<SendStream<Bytes>>,
    body_in: Option<RecvStream>,
    resp: Option<Box<ResponseHeader>>,
    trailers: Option<HeaderMap>,
    body_done: bool,
    /// The request side has ended (END_STREAM sent).
    sent_all: bool,
    /// The upstream reset the stream with NO_ERROR: it wants no more of
    /// the request; the rest of its body is dropped.
    stopped: bool,
    /// Request body waiting for flow-control credit (see `drive`).
    queued: Option<Bytes>,
    /// The end of the request (with trailers), to send after `queued`.
    finish_queued: Option<Option<HeaderMap>>,
    /// The response header, taken in by `drive` before `read_response`.
    resp_ready: Option<Box<std::result::Result<http::Response<RecvStream>, h2::Error>>>,
    /// A piece of response body taken in by `drive`.
    data_ready: Option<Option<std::result::Result<Bytes, h2::Error>>>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Drop for Http2Session {
    fn drop(&mut self) {
        self.0.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connection-specific fields, not allowed in HTTP/2 (RFC 9113 §8.2.2).
fn strip(req: &mut RequestHeader) {
    req.remove_header(&CONNECTION);
    req.remove_header(&TRANSFER_ENCODING);
    req.remove_header(&UPGRADE);
    for n in ["keep-alive", "proxy-connection"] {
        req.remove_header(&HeaderName::from_static(n));
    }
    let te = HeaderName::from_static("te");
    if req
        .header_values(&te)
        .next()
        .is_some_and(|v| !v.eq_ignore_ascii_case(b"trailers"))
    {
        req.remove_header(&HeaderName::from_static("te"));
    }
}

/// `fut` under `limit`, if any; a timeout becomes `etype`.
async fn within<T>(
    limit: Option<Duration>,
    etype: pingora_error::ErrorType,
    what: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T> {
    match limit {
        None => Ok(fut.await),
        Some(d) => pingora_timeout::timeout(d, fut)
            .await
            .map_err(|_| Error::explain(etype, what).into_up()),
    }
}

impl Http2Session {
    /// A session for a stream about to be opened with `send` on `conn`
    /// (whose `active` count already includes it).
    pub(super) fn new(send: SendRequest<Bytes>, conn: H2Connection) -> Self {
        Http2Session(Box::new(StreamState {
            send_req: Some(send),
            conn,
            response: None,
            body_out: None,
            body_in: None,
            resp: None,
            trailers: None,
            body_done: false,
            sent_all: false,
            stopped: false,
            queued: None,
            finish_queued: None,
            resp_ready: None,
            data_ready: None,
            read_timeout: None,
            write_timeout: None,
        }))
    }

    /// Time allowed for the response header and for each body read, and
    /// for each wait for flow-control credit when sending.
    pub fn set_timeouts(&mut self, read: Option<Duration>, write: Option<Duration>) {
        self.0.read_timeout = read;
        self.0.write_timeout = write;
    }

    /// Time allowed for the response header and for each body read.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.0.read_timeout = timeout;
    }

    /// Time allowed for each wait for flow-control credit when sending.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.0.write_timeout = timeout;
    }

    /// Give up the stream: reset it (CANCEL) in both directions.
    pub fn abort(&mut self) {
        if let Some(out) = self.0.body_out.as_mut() {
            out.send_reset(h2::Reason::CANCEL);
        }
        self.0.body_out = None;
        self.0.body_in = None;
        self.0.response = None;
        self.0.sent_all = true;
        self.0.body_done = true;
    }

    /// Send the request header; with `end_of_stream`, the request has no
    /// body. The Host header becomes `:authority`.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if the Host is not a valid authority or there is no
    /// authority at all; `H2Error` if a header was already sent or sending
    /// fails (retryable when the upstream's GOAWAY came first).
    pub async fn write_request_header(
        &mut self,
        mut req: Box<RequestHeader>,
        end_of_stream: bool,
    ) -> Result<()> {
        let mut send = self
            .0
            .send_req
            .take()
            .or_err(H2Error, "request header already sent")?;
        strip(&mut req);
        let host = req
            .header_values(&HOST)
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok());
        req.remove_header(&HOST);
        let mut parts = req.into_parts();
        // The request's own Host or authority first; the connection's
        // default only for a request that has neither.
        let authority = match (&host, parts.uri.authority(), &self.0.conn.authority) {
            (Some(h), _, _) => h
                .to_str()
                .ok()
                .and_then(|h| h.parse::<Authority>().ok())
                .or_err(InvalidHTTPHeader, "Host is not a valid authority")?,
            (None, Some(a), _) => a.clone(),
            (None, None, Some(a)) => a.clone(),
            (None, None, None) => {
                return Error::e_explain(InvalidHTTPHeader, "request has no Host or authority")
            }
        };
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(if self.0.conn.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some("/".parse().or_err(InternalError, "path")?);
        }
        parts.uri = Uri::from_parts(uri).or_err(InvalidHTTPHeader, "building the request URI")?;
        parts.version = http::Version::HTTP_2;
        let request = http::Request::from_parts(parts, ());
        let (response, body) = send.send_request(request, end_of_stream).map_err(|e| {
            let go_away = e.is_go_away();
            if go_away {
                self.0.conn.closed.store(true, Ordering::Release);
            }
            let mut e = Error::because(H2Error, "sending the request", e).into_up();
            // The GOAWAY came after this stream was handed out: nothing
            // was sent, so another connection may take the request.
            e.set_retry(go_away);
            e
        })?;
        self.0.response = Some(response);
        self.0.body_out = Some(body);
        self.0.sent_all = end_of_stream;
        Ok(())
    }

    /// Send request body bytes, as the upstream's window allows.
    ///
    /// # Errors
    ///
    /// `H2Error` if no request was sent or the stream fails or closes;
    /// `WriteTimedout` if the upstream grants no flow-control credit within
    /// the write timeout. A NO_ERROR reset by the upstream is not an error:
    /// the rest of the body is dropped.
    pub async fn write_body(&mut self, data: Bytes) -> Result<()> {
        if self.0.stopped {
            return Ok(());
        }
        match self.send_body(data).await {
            Err(e) => self.send_failed(e),
            ok => ok,
        }
    }

    async fn send_body(&mut self, data: Bytes) -> Result<()> {
        let state = &mut *self.0;
        let send = state.body_out.as_mut().or_err(H2Error, "no request sent")?;
        let to = crate::protocols::http::v2::Receiver::Upstream;
        let mut sent = 0;
        crate::protocols::http::v2::send_with_credit(send, data, state.write_timeout, to, &mut sent)
            .await
    }

    /// End the request body, with `trailers` if given (nothing to do if the
    /// header already ended the request).
    ///
    /// # Errors
    ///
    /// `H2Error` if body bytes are still queued, no request was sent, or the
    /// end cannot be sent (not for a NO_ERROR reset by the upstream).
    pub async fn finish_body(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        if self.0.queued.is_some() {
            return Error::e_explain(H2Error, "request body still queued");
        }
        self.end_stream(trailers)
    }

    /// End the request once the queued body is out (at once if none is).
    ///
    /// # Errors
    ///
    /// Ending at once: `H2Error` if no request was sent or the end cannot be
    /// sent (not for a NO_ERROR reset by the upstream).
    pub fn queue_finish(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        if self.0.queued.is_some() {
            self.0.finish_queued = Some(trailers);
            return Ok(());
        }
        self.end_stream(trailers)
    }

    fn end_stream(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        if self.0.sent_all {
            return Ok(());
        }
        self.0.sent_all = true;
        let send = self
            .0
            .body_out
            .as_mut()
            .or_err(H2Error, "no request sent")?;
        let sent = match trailers {
            Some(t) => send.send_trailers(t),
            None => send.send_data(Bytes::new(), true),
        };
        match sent.or_err(H2Error, "ending the request") {
            Err(e) => self.send_failed(e.into_up()),
            Ok(()) => Ok(()),
        }
    }

    /// Sending the request failed with `e`. Not an error when the upstream
    /// reset the stream with NO_ERROR: a server that has sent its whole
    /// response may stop the request that way (RFC 9113 §8.1; gRPC servers
    /// do when a call ends before the client half-closes). The response
    /// stays readable and the rest of the request body is dropped.
    fn send_failed(&mut self, e: Box<Error>) -> Result<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let no_error = self.0.body_out.as_mut().is_some_and(|send| {
            matches!(
                send.poll_reset(&mut cx),
                Poll::Ready(Ok(h2::Reason::NO_ERROR))
            )
        });
        if !no_error {
            return Err(e);
        }
        self.0.stopped = true;
        self.0.sent_all = true;
        self.0.queued = None;
        self.0.finish_queued = None;
        Ok(())
    }

    /// Queue request body bytes, to be sent by [`read_body_while_sending`](Self::read_body_while_sending) as
    /// the upstream grants flow-control credit, while the response is read.
    ///
    /// # Errors
    ///
    /// `H2Error` if body bytes are already queued (one piece at a time).
    pub fn queue_body(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() || self.0.stopped {
            return Ok(());
        }
        if self.0.queued.is_some() {
            return Error::e_explain(H2Error, "request body already queued");
        }
        self.0.queued = Some(data);
        Ok(())
    }

    /// Whether queued request body bytes are still to be sent.
    pub fn has_queued(&self) -> bool {
        self.0.queued.is_some()
    }

    /// Read the response header while sending the queued body. `false`:
    /// the queue went out first and no header is in yet (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `H2Error` if the stream fails, `WriteTimedout`
    /// if nothing moves within the write timeout (a NO_ERROR reset by the
    /// upstream only drops the queue). Then the errors of
    /// [`read_response`](Self::read_response).
    pub async fn read_response_while_sending(&mut self) -> Result<bool> {
        if self.has_queued() && self.drive().await? == Progress::Sent {
            return Ok(false);
        }
        self.read_response().await.map(|_| true)
    }

    /// The next piece of response body (`Some(None)` at its end) while
    /// sending the queued body. `None`: the queue went out first and
    /// nothing was read (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `H2Error` if the stream fails, `WriteTimedout`
    /// if nothing moves within the write timeout (a NO_ERROR reset by the
    /// upstream only drops the queue). Then the errors of
    /// [`read_body_bytes`](Self::read_body_bytes).
    pub async fn read_body_while_sending(&mut self) -> Result<Option<Option<Bytes>>> {
        if self.has_queued() && self.drive().await? == Progress::Sent {
            return Ok(None);
        }
        self.read_body_bytes().await.map(Some)
    }

    /// Send the queue as credit comes, while taking in the response:
    /// `Sent` when the queue is out, `Readable` when the response header
    /// or a piece of its body can be read without waiting.
    async fn drive(&mut self) -> Result<Progress> {
        let limit = self.0.write_timeout;
        let step = poll_fn(|cx| self.poll_drive(cx));
        within(
            limit,
            WriteTimedout,
            "upstream gave no flow-control credit",
            step,
        )
        .await?
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Progress>> {
        if self.0.resp_ready.is_some() || self.0.data_ready.is_some() {
            return Poll::Ready(Ok(Progress::Readable));
        }
        let failed = 'send: {
            let (Some(data), Some(send)) = (self.0.queued.as_mut(), self.0.body_out.as_mut())
            else {
                self.0.queued = None;
                return Poll::Ready(Ok(Progress::Sent));
            };
            while !data.is_empty() {
                send.reserve_capacity(data.len());
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) | Poll::Pending => break,
                    Poll::Ready(Some(Ok(n))) => {
                        let chunk = data.split_to(n.min(data.len()));
                        if let Err(e) = send.send_data(chunk, false) {
                            break 'send Error::because(H2Error, "sending body data", e);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        break 'send Error::because(H2Error, "upstream flow control", e);
                    }
                    Poll::Ready(None) => {
                        break 'send Error::explain(H2Error, "upstream closed the stream");
                    }
                }
            }
            if data.is_empty() {
                self.0.queued = None;
                if let Some(trailers) = self.0.finish_queued.take() {
                    if let Err(e) = self.end_stream(trailers) {
                        return Poll::Ready(Err(e));
                    }
                }
                return Poll::Ready(Ok(Progress::Sent));
            }
            // Waiting for credit: take in the response meanwhile.
            if let Some(fut) = self.0.response.as_mut() {
                if let Poll::Ready(r) = Pin::new(fut).poll(cx) {
                    self.0.resp_ready = Some(Box::new(r));
                    return Poll::Ready(Ok(Progress::Readable));
                }
            } else if let (Some(body), false) = (self.0.body_in.as_mut(), self.0.body_done) {
                if let Poll::Ready(d) = body.poll_data(cx) {
                    self.0.data_ready = Some(d);
                    return Poll::Ready(Ok(Progress::Readable));
                }
            }
            return Poll::Pending;
        };
        // A failed send is the queue's end when the upstream stopped the
        // request without error.
        Poll::Ready(self.send_failed(failed.into_up()).map(|_| Progress::Sent))
    }

    /// Wait for the response header.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if the header does not come within the read timeout;
    /// `H2Error` if no request was sent or the stream fails (retryable when
    /// the upstream's GOAWAY or REFUSED_STREAM says it was not processed).
    pub async fn read_response(&mut self) -> Result<()> {
        // Polled in place (not taken) so that a caller may drop this future
        // and call again, e.g. from a `select!`.
        let resp = match self.0.resp_ready.take() {
            Some(r) => *r,
            None => {
                let fut = self
                    .0
                    .response
                    .as_mut()
                    .or_err(H2Error, "no request sent")?;
                within(
                    self.0.read_timeout,
                    ReadTimedout,
                    "upstream response header timed out",
                    fut,
                )
                .await?
            }
        };
        let resp = resp.map_err(|e| {
            let go_away = e.is_go_away();
            if go_away {
                self.0.conn.closed.store(true, Ordering::Release);
            }
            let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM);
            let mut e = Error::because(H2Error, "reading the response", e).into_up();
            // A GOAWAY fails only the streams the server did not process
            // (RFC 9113 §6.8), and REFUSED_STREAM says the stream was not
            // processed (§8.7): those are safe to send again.
            e.set_retry(go_away || refused);
            e
        })?;
        self.0.response = None;
        let (parts, body) = resp.into_parts();
        self.0.body_done = body.is_end_stream();
        self.0.body_in = Some(body);
        self.0.resp = Some(Box::new(ResponseHeader::from_parts(parts)));
        Ok(())
    }

    /// The response header, once read.
    pub fn resp_header(&self) -> Option<&ResponseHeader> {
        self.0.resp.as_deref()
    }

    /// Take the response header, to forward it without a copy;
    /// `resp_header` is `None` after this.
    pub fn take_resp_header(&mut self) -> Option<Box<ResponseHeader>> {
        self.0.resp.take()
    }

    /// The next piece of the response body; `None` at its end.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if a read waits past the read timeout; `H2Error` if no
    /// response header was read, or the stream fails while its body or
    /// trailers are read.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        if self.0.body_done {
            return Ok(None);
        }
        let body = self
            .0
            .body_in
            .as_mut()
            .or_err(H2Error, "no response read")?;
        let next = match self.0.data_ready.take() {
            Some(n) => n,
            None => {
                within(
                    self.0.read_timeout,
                    ReadTimedout,
                    "upstream body read timed out",
                    body.data(),
                )
                .await?
            }
        };
        match next {
            Some(Ok(d)) => {
                let _ = body.flow_control().release_capacity(d.len());
                Ok(Some(d))
            }
            Some(Err(e)) => Err(Error::because(H2Error, "reading the response body", e).into_up()),
            None => {
                // Done only once the trailers are in: a caller that drops
                // this future before then calls again and gets them.
                self.0.data_ready = Some(None);
                self.0.trailers = body
                    .trailers()
                    .await
                    .or_err(H2Error, "reading response trailers")
                    .map_err(|e| e.into_up())?;
                self.0.data_ready = None;
                self.0.body_done = true;
                Ok(None)
            }
        }
    }

    /// Whether the response body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        self.0.body_done
    }

    /// The response's trailers, once its body has been read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.0.trailers.as_ref()
    }

    /// The connection this stream is on.
    pub fn connection(&self) -> &H2Connection {
        &self.0.conn
    }
}
