//! Writing the response, and ending the exchange or the connection.

use super::*;

impl HttpSession {
    /// Write a response header. 1xx headers go out at once; a `101`
    /// turns the connection into a tunnel. For a final header the body
    /// framing follows its Content-Length or Transfer-Encoding; with
    /// neither, chunked is added for HTTP/1.1 clients and the body is
    /// close-delimited for HTTP/1.0.
    ///
    /// # Errors
    ///
    /// `H1Error` if no request was read, a final header was already written,
    /// or a 101 answers a request that did not ask to upgrade;
    /// `InvalidHTTPHeader` for a bad Content-Length; `WriteError` or
    /// `WriteTimedout` when a 1xx or a tunnel's header is flushed.
    pub async fn write_response_header(&mut self, mut resp: Box<ResponseHeader>) -> Result<()> {
        if self.final_written {
            return Error::e_explain(H1Error, "response header already written");
        }
        let req = self
            .req
            .as_ref()
            .or_err(H1Error, "no request to respond to")?;
        let method = req.method().clone();
        let req_version = req.version();
        let status = resp.status();
        resp.set_version(Version::HTTP_11);
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if !self.is_upgrade_req() {
                    return Error::e_explain(
                        H1Error,
                        "101 to a request that did not ask to upgrade",
                    );
                }
                self.become_tunnel();
            } else if status == StatusCode::CONTINUE {
                if !self.continue_pending {
                    return Ok(()); // not asked for, or already sent
                }
                self.continue_pending = false;
            }
            let pending = self.conn.pending_mut();
            pending.reserve(resp.h1_len());
            resp.write_h1(pending);
            self.conn.flush().await?;
            if self.upgraded {
                self.final_written = true;
                self.resp = Some(resp);
            }
            return Ok(());
        }
        self.no_body = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if method == Method::CONNECT && status.is_success() {
            resp.remove_header(&CONTENT_LENGTH);
            resp.remove_header(&TRANSFER_ENCODING);
            self.become_tunnel();
            Framing::UntilClose
        } else if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            if status == StatusCode::NO_CONTENT {
                resp.remove_header(&CONTENT_LENGTH);
            }
            resp.remove_header(&TRANSFER_ENCODING);
            Framing::None
        } else if method == Method::HEAD {
            Framing::None
        } else if resp.has_tracked(pingora_http::tracked::TRANSFER_ENCODING)
            && req_version == Version::HTTP_11
        {
            resp.remove_header(&CONTENT_LENGTH);
            resp.insert_header("Transfer-Encoding", "chunked")?;
            Framing::Chunked
        } else if let Some(n) = framing::content_length(&*resp)? {
            resp.remove_header(&TRANSFER_ENCODING);
            Framing::Length(n)
        } else if req_version == Version::HTTP_11 {
            resp.remove_header(&TRANSFER_ENCODING);
            resp.insert_header("Transfer-Encoding", "chunked")?;
            Framing::Chunked
        } else {
            resp.remove_header(&TRANSFER_ENCODING);
            self.keepalive = false;
            Framing::UntilClose
        };
        // The client may not send the body it was waiting to send: unless it
        // was read, the connection cannot be trusted for another request.
        if self.continue_pending {
            self.keepalive = false;
        }
        if self.keepalive && self.shutdown.as_ref().is_some_and(|w| *w.borrow()) {
            // A graceful shutdown began while this request was served.
            self.keepalive = false;
        }
        if !self.upgraded {
            if !self.keepalive {
                resp.insert_header("Connection", "close")?;
            } else if req_version == Version::HTTP_10 {
                resp.insert_header("Connection", "keep-alive")?;
            }
        }
        let pending = self.conn.pending_mut();
        pending.reserve(resp.h1_len());
        resp.write_h1(pending);
        self.conn.start_write(framing);
        self.final_written = true;
        self.resp = Some(resp);
        if self.upgraded {
            // A tunnel's first bytes may come from either side: the client
            // must see the answer now.
            self.conn.flush().await?;
        }
        Ok(())
    }

    fn become_tunnel(&mut self) {
        self.upgraded = true;
        self.keepalive = false;
        self.continue_pending = false;
        self.conn.become_tunnel();
    }

    /// Write response body bytes (raw tunnel bytes after an upgrade). For a
    /// response that has no body (to HEAD, 204, 304) they are dropped.
    ///
    /// # Errors
    ///
    /// `H1Error` if no final header was written, the body has ended, or `data`
    /// runs past the Content-Length; `WriteError` or `WriteTimedout` if the
    /// write fails or outlasts the write timeout.
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        if self.no_body && self.final_written {
            return Ok(());
        }
        self.conn.write_body(data).await.map_err(|e| e.into_down())
    }

    /// Trailer fields to send after a chunked response body.
    pub fn set_response_trailers(&mut self, trailers: HeaderMap) {
        self.trailers_out = Some(Box::new(trailers));
    }

    /// End the response body (last chunk and trailers) and flush.
    ///
    /// # Errors
    ///
    /// `H1Error` if no final response header was written, or a body framed by
    /// Content-Length is short; `WriteError` or `WriteTimedout` from the flush.
    pub async fn finish_body(&mut self) -> Result<()> {
        if !self.final_written {
            return Error::e_explain(H1Error, "no response header written");
        }
        let trailers = self.trailers_out.take();
        if self.conn.owes_body() {
            self.keepalive = false;
        }
        self.conn.finish_body(trailers.as_deref()).await
    }

    /// Finish this request: end the response body if needed, read and drop
    /// what is left of the request body (up to a bound), and get ready for
    /// the next request. Returns whether the connection may carry another
    /// request; if not, the caller should drop the session.
    ///
    /// # Errors
    ///
    /// Those of [`finish_body`](Self::finish_body) (`H1Error` for a short
    /// Content-Length body), or `WriteError` or `WriteTimedout` from the flush.
    /// A request body that cannot be drained only makes it `false`.
    pub async fn finish(&mut self) -> Result<bool> {
        if self.final_written && self.conn.writer() != BodyWriter::Done {
            self.finish_body().await?;
        } else {
            self.conn.flush().await?;
        }
        if !self.final_written || self.upgraded || !self.keepalive {
            self.keepalive = false;
            return Ok(false);
        }
        if !self.conn.body_done() && !self.conn.drain_body(DRAIN_BUDGET).await {
            self.keepalive = false;
            return Ok(false);
        }
        // The exchange is over: an error in reading the next request must
        // be answered (`respond_error` writes nothing once a final
        // response is marked written).
        self.final_written = false;
        self.req = None;
        if let Some(resp) = self.resp.take() {
            ResponseHeader::recycle(resp);
        }
        Ok(true)
    }

    /// Answer with an error status and an empty body, and mark the
    /// connection to close. Used for requests that fail to parse.
    ///
    /// # Errors
    ///
    /// `WriteError` or `WriteTimedout` if the answer cannot be sent within the
    /// write timeout. Nothing is written (and no error) once a final response
    /// header was.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        if self.final_written {
            return Ok(());
        }
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let line =
            format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        self.keepalive = false;
        self.final_written = true;
        self.conn.stop_writing();
        self.conn.write_parts(&[line.as_bytes()]).await?;
        self.conn.flush().await
    }

    /// Shut the connection down cleanly (FIN after what was written).
    pub async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.conn.flush().await;
        let fut = self.conn.stream_mut().shutdown();
        let _ = pingora_timeout::timeout(Duration::from_secs(1), fut).await;
    }

    /// Close after a complete exchange (a `Connection: close` response):
    /// lingering ([`close_lingering`](Self::close_lingering)) only when the
    /// client may still be sending (its request body not read to the end,
    /// bytes read ahead, or input waiting on the socket now), as nginx's
    /// `lingering_close on` decides; otherwise a FIN at once, without the
    /// read and timer a lingering close costs.
    pub async fn close(&mut self) {
        let quiet = self.conn.body_done() && self.conn.buf().is_empty() && !self.upgraded && {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            self.conn.stream().poll_read_ready(&mut cx).is_pending()
        };
        if quiet {
            self.shutdown().await;
        } else {
            self.close_lingering().await;
        }
    }

    /// Close after an error or a `Connection: close` response without
    /// losing what was written: send FIN, then read and drop what the
    /// client still sends for a short while, so the kernel does not answer
    /// unread input with a reset that could destroy the response.
    pub async fn close_lingering(&mut self) {
        self.conn.close_lingering().await;
    }
}
