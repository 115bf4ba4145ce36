//! The gRPC-web bridge as an HTTP module: gRPC-web requests (binary or
//! `-text`, over HTTP/1.1 or HTTP/2) go to the upstream as gRPC, and its
//! answers come back as gRPC-web, trailers as the body's last frame. The
//! upstream must be spoken to over HTTP/2 (the user's `upstream_peer`
//! picks it). See [`bridge::grpc_web`](crate::protocols::http::bridge::grpc_web)
//! for the protocol.
//!
//! Two ways in:
//!
//! - [`GrpcWeb`], Pingora's: the bridge is off for each request until the
//!   user's `early_request_filter` turns it on with
//!   `session.downstream_modules_ctx.get_mut::<GrpcWebBridge>().unwrap().init()`.
//! - [`GrpcWebBuilder`] (ours): on for every request, and answering
//!   browsers' CORS preflights when given a [`GrpcWebCors`].
//!
//! ```
//! use pingora_core::modules::http::grpc_web::{GrpcWeb, GrpcWebBridge, GrpcWebBuilder, GrpcWebCors};
//! use pingora_core::modules::http::HttpModules;
//!
//! // A service that bridges every request, for pages served from one origin.
//! let mut modules = HttpModules::new();
//! let cors = GrpcWebCors::origins(["https://app.example"]).unwrap();
//! modules.add_module(Box::new(GrpcWebBuilder::new().cors(cors)));
//! assert!(modules.build_ctx().get::<GrpcWebBridge>().is_some());
//!
//! // Pingora's form: off until `init()` for the requests that want it.
//! let mut modules = HttpModules::new();
//! modules.add_module(Box::new(GrpcWeb));
//! let mut ctx = modules.build_ctx();
//! ctx.get_mut::<GrpcWebBridge>().unwrap().init();
//! ```

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::{finished, FilterFuture, HttpModule, HttpModuleBuilder, Module};
use crate::protocols::http::bridge::grpc_web::{Encoding, GrpcWebCtx, TextDecoder, TextEncoder};

/// What gRPC-web clients send beside the standard headers (grpc-web's
/// JavaScript client and Improbable's), for preflights.
const DEFAULT_ALLOW_HEADERS: &str = "content-type,x-grpc-web,x-user-agent,grpc-timeout,\
    authorization,keep-alive,user-agent,cache-control,content-transfer-encoding,\
    x-accept-content-transfer-encoding,x-accept-response-streaming";

/// The response headers a browser script may read: gRPC's status.
const DEFAULT_EXPOSE_HEADERS: &str = "grpc-status,grpc-message,grpc-status-details-bin";

/// How the bridge answers browsers' cross-origin requests (CORS): the
/// preflight `OPTIONS` is answered by the proxy (204, or 403 for an origin
/// not allowed), and bridged responses carry `Access-Control-Allow-Origin`
/// and `Access-Control-Expose-Headers` (gRPC's status fields).
#[derive(Debug, Clone)]
pub struct GrpcWebCors {
    /// `None`: any origin (`*`).
    origins: Option<Vec<HeaderValue>>,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

impl GrpcWebCors {
    /// Any origin may call (`Access-Control-Allow-Origin: *`).
    pub fn any_origin() -> Self {
        GrpcWebCors {
            origins: None,
            allow_headers: HeaderValue::from_static(DEFAULT_ALLOW_HEADERS),
            expose_headers: HeaderValue::from_static(DEFAULT_EXPOSE_HEADERS),
            max_age: HeaderValue::from_static("86400"),
        }
    }

    /// Only these origins (`https://host[:port]`, compared exactly) may
    /// call; each allowed one is named back, with `Vary: Origin`.
    ///
    /// # Errors
    ///
    /// `InternalError` if an origin is not a valid header value (a control
    /// character, or one outside visible ASCII).
    pub fn origins<I, S>(origins: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins = origins
            .into_iter()
            .map(|o| {
                HeaderValue::from_str(o.as_ref()).or_err(ErrorType::InternalError, "a CORS origin")
            })
            .collect::<Result<_>>()?;
        Ok(GrpcWebCors {
            origins: Some(origins),
            ..Self::any_origin()
        })
    }

    /// The request headers a preflight allows (comma-separated; the default
    /// lists what gRPC-web clients send).
    ///
    /// # Errors
    ///
    /// `InternalError` if `headers` is not a valid header value (a control
    /// character, or one outside visible ASCII).
    pub fn allow_headers(mut self, headers: &str) -> Result<Self> {
        self.allow_headers = HeaderValue::from_str(headers)
            .or_err(ErrorType::InternalError, "CORS allow_headers")?;
        Ok(self)
    }

    /// The response headers scripts may read (default: `grpc-status`,
    /// `grpc-message`, `grpc-status-details-bin`).
    ///
    /// # Errors
    ///
    /// `InternalError` if `headers` is not a valid header value (a control
    /// character, or one outside visible ASCII).
    pub fn expose_headers(mut self, headers: &str) -> Result<Self> {
        self.expose_headers = HeaderValue::from_str(headers)
            .or_err(ErrorType::InternalError, "CORS expose_headers")?;
        Ok(self)
    }

    /// How long browsers may keep a preflight's answer (default one day).
    pub fn max_age(mut self, seconds: u32) -> Self {
        self.max_age = HeaderValue::from(seconds);
        self
    }

    /// The `Access-Control-Allow-Origin` for this `Origin`, if allowed.
    fn allow(&self, origin: &[u8]) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => list.iter().find(|o| o.as_bytes() == origin).cloned(),
        }
    }

    /// The answer to a preflight from `origin` (allowed or not).
    fn preflight(&self, allowed: Option<&HeaderValue>) -> Result<Box<ResponseHeader>> {
        let Some(origin) = allowed else {
            let mut resp = ResponseHeader::build(403, Some(1))?;
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            return Ok(Box::new(resp));
        };
        let mut resp = ResponseHeader::build(204, Some(5))?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS")?;
        resp.insert_header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        )?;
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone())?;
        if self.origins.is_some() {
            resp.insert_header(header::VARY, "Origin")?;
        }
        Ok(Box::new(resp))
    }
}

/// The bridge's per-request module: Pingora's `GrpcWebBridge`, which
/// dereferences to its [`GrpcWebCtx`] (`init()` and the state); ours adds
/// the `-text` form and CORS.
#[derive(Debug, Default)]
pub struct GrpcWebBridge {
    ctx: GrpcWebCtx,
    cors: Option<Arc<GrpcWebCors>>,
    /// The `-text` request body's decoder, once the request was bridged.
    decoder: Option<TextDecoder>,
    /// The `-text` response body's encoder, while the response is bridged.
    encoder: Option<TextEncoder>,
    /// The `Access-Control-Allow-Origin` the response gets.
    allowed_origin: Option<HeaderValue>,
    /// The answer to a CORS preflight, in place of the upstream's.
    preflight: Option<Box<ResponseHeader>>,
}

impl Deref for GrpcWebBridge {
    type Target = GrpcWebCtx;

    fn deref(&self) -> &GrpcWebCtx {
        &self.ctx
    }
}

impl DerefMut for GrpcWebBridge {
    fn deref_mut(&mut self) -> &mut GrpcWebCtx {
        &mut self.ctx
    }
}

impl GrpcWebBridge {
    /// The request header: a preflight is answered, a gRPC-web request
    /// becomes gRPC.
    fn request(&mut self, req: &mut RequestHeader) -> Result<()> {
        if self.ctx != GrpcWebCtx::Init {
            return Ok(());
        }
        if let Some(cors) = &self.cors {
            if let Some(origin) = req.header_values(&header::ORIGIN).next() {
                self.allowed_origin = cors.allow(origin);
                if req.method == Method::OPTIONS
                    && req.has_header(&header::ACCESS_CONTROL_REQUEST_METHOD)
                {
                    self.preflight = Some(cors.preflight(self.allowed_origin.as_ref())?);
                    self.ctx = GrpcWebCtx::Done;
                    return Ok(());
                }
            }
        }
        if self.ctx.upgrade_request(req, true)? == Some(Encoding::Text) {
            self.decoder = Some(TextDecoder::default());
            self.encoder = Some(TextEncoder::default());
        }
        Ok(())
    }

    /// The response header: a gRPC answer becomes gRPC-web's.
    fn response(&mut self, resp: &mut ResponseHeader) -> Result<()> {
        if self.ctx != GrpcWebCtx::Upgrade || resp.status.is_informational() {
            return Ok(());
        }
        let encoding = match self.encoder {
            Some(_) => Encoding::Text,
            None => Encoding::Binary,
        };
        if !self.ctx.upgrade_response(resp, encoding)? {
            // Not gRPC (an error page): its body goes as it is.
            self.encoder = None;
        }
        if let (Some(origin), Some(cors)) = (&self.allowed_origin, &self.cors) {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
            resp.insert_header(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                cors.expose_headers.clone(),
            )?;
            if cors.origins.is_some() {
                resp.append_header(header::VARY, "Origin")?;
            }
        }
        Ok(())
    }

    /// A piece of the `-text` request body, decoded.
    fn request_body(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        let Some(decoder) = &mut self.decoder else {
            return Ok(());
        };
        if let Some(piece) = body.as_mut() {
            *piece = decoder.decode(piece).map_err(|e| e.into_down())?;
        }
        if end {
            decoder.finish().map_err(|e| e.into_down())?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl HttpModule for GrpcWebBridge {
    // Written out (not `async fn`): nothing waits, and the ready futures
    // are zero-sized or hold only the result, so nothing is allocated.
    fn request_header_filter<'s, 'a, 'f>(
        &'s mut self,
        req: &'a mut RequestHeader,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        finished(self.request(req))
    }

    fn early_response(&mut self) -> Option<(Box<ResponseHeader>, Bytes)> {
        self.preflight.take().map(|resp| (resp, Bytes::new()))
    }

    fn request_body_filter<'s, 'a, 'f>(
        &'s mut self,
        body: &'a mut Option<Bytes>,
        end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        finished(self.request_body(body, end_of_stream))
    }

    fn response_header_filter<'s, 'a, 'f>(
        &'s mut self,
        resp: &'a mut ResponseHeader,
        _end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        finished(self.response(resp))
    }

    fn response_body_filter(&mut self, body: &mut Option<Bytes>, _end: bool) -> Result<()> {
        // The end may still be followed by trailers: bytes short of a
        // 3-byte group wait for them (or for `response_done_filter`).
        if let (Some(encoder), Some(piece)) = (&mut self.encoder, body.as_mut()) {
            *piece = encoder.encode(piece);
        }
        Ok(())
    }

    fn response_trailer_filter(
        &mut self,
        trailers: &mut Option<Box<HeaderMap>>,
    ) -> Result<Option<Bytes>> {
        let Some(trailers) = trailers else {
            return Ok(None);
        };
        let frame = self.ctx.response_trailer_filter(trailers)?;
        Ok(match (frame, &mut self.encoder) {
            (Some(frame), Some(encoder)) => Some(encoder.finish(&frame)),
            (frame, _) => frame,
        })
    }

    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        // A bridged body that ended without trailers: pad what waited.
        Ok(match &mut self.encoder {
            Some(encoder) if encoder.is_holding() => Some(encoder.finish(&[])),
            _ => None,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Pingora's builder: a [`GrpcWebBridge`] per request, off until the
/// user's phases call its `init()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcWeb;

impl HttpModuleBuilder for GrpcWeb {
    fn init(&self) -> Module {
        Box::new(GrpcWebBridge::default())
    }
}

/// Our builder: a [`GrpcWebBridge`] on for every request (a request that is
/// not gRPC-web passes untouched), with CORS answered if configured.
#[derive(Debug, Clone, Default)]
pub struct GrpcWebBuilder {
    cors: Option<Arc<GrpcWebCors>>,
}

impl GrpcWebBuilder {
    /// On for every request, no CORS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer CORS preflights and mark bridged responses for these origins.
    pub fn cors(mut self, cors: GrpcWebCors) -> Self {
        self.cors = Some(Arc::new(cors));
        self
    }
}

impl HttpModuleBuilder for GrpcWebBuilder {
    fn init(&self) -> Module {
        Box::new(GrpcWebBridge {
            ctx: GrpcWebCtx::Init,
            cors: self.cors.clone(),
            ..GrpcWebBridge::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::http::HttpModules;

    fn bridge(cors: Option<GrpcWebCors>) -> crate::modules::http::HttpModuleCtx {
        let mut b = GrpcWebBuilder::new();
        if let Some(c) = cors {
            b = b.cors(c);
        }
        let mut modules = HttpModules::new();
        modules.add_module(Box::new(b));
        modules.build_ctx()
    }

    fn web_request(ct: &str) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/test.Echo/Unary", None).unwrap();
        req.insert_header("Content-Type", ct).unwrap();
        req.insert_header("Origin", "https://app.example").unwrap();
        req
    }

    fn grpc_response() -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "application/grpc")
            .unwrap();
        resp
    }

    #[tokio::test]
    async fn text_requests_and_responses_are_base64_both_ways() {
        let mut m = bridge(None);
        let mut req = web_request("application/grpc-web-text");
        m.request_header_filter(&mut req).await.unwrap();
        assert_eq!(req.headers["content-type"], "application/grpc");
        // "\0\0\0\0\x02hi" in base64, split mid-group.
        let mut body = Some(Bytes::from_static(b"AAAAAA"));
        m.request_body_filter(&mut body, false).await.unwrap();
        assert_eq!(body.as_deref(), Some(&b"\0\0\0"[..])); // "AA" waits
        let mut body = Some(Bytes::from_static(b"JoaQ=="));
        m.request_body_filter(&mut body, true).await.unwrap();
        assert_eq!(body.as_deref(), Some(&b"\0\x02hi"[..]));

        let mut resp = grpc_response();
        m.response_header_filter(&mut resp, false).await.unwrap();
        assert_eq!(resp.headers["content-type"], "application/grpc-web-text");
        assert!(resp.headers.get("access-control-allow-origin").is_none());
        let mut body = Some(Bytes::from_static(b"\0\0\0\0\x02ok"));
        m.response_body_filter(&mut body, true).unwrap();
        assert_eq!(body.as_deref(), Some(&b"AAAAAAJv"[..])); // "k" waits
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let mut t = Some(Box::new(t));
        let last = m.response_trailer_filter(&mut t).unwrap().unwrap();
        let mut all = b"AAAAAAJv".to_vec();
        all.extend_from_slice(&last);
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&all)
            .unwrap();
        assert_eq!(
            &decoded[..],
            b"\0\0\0\0\x02ok\x80\0\0\0\x0fgrpc-status:0\r\n"
        );
        assert_eq!(m.response_done_filter().unwrap(), None);
    }

    #[tokio::test]
    async fn preflights_are_answered_for_allowed_origins_only() {
        let cors = GrpcWebCors::origins(["https://app.example"]).unwrap();
        let mut m = bridge(Some(cors));
        let mut req = RequestHeader::build("OPTIONS", b"/test.Echo/Unary", None).unwrap();
        req.insert_header("Origin", "https://app.example").unwrap();
        req.insert_header("Access-Control-Request-Method", "POST")
            .unwrap();
        m.request_header_filter(&mut req).await.unwrap();
        let (resp, body) = m.early_response().unwrap();
        assert_eq!(resp.status, 204);
        assert!(body.is_empty());
        assert_eq!(
            resp.headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(resp.headers["vary"], "Origin");

        let cors = GrpcWebCors::origins(["https://app.example"]).unwrap();
        let mut m = bridge(Some(cors));
        req.insert_header("Origin", "https://evil.example").unwrap();
        m.request_header_filter(&mut req).await.unwrap();
        assert_eq!(m.early_response().unwrap().0.status, 403);

        // An actual call gets the origin and the exposed status fields.
        let mut m = bridge(Some(GrpcWebCors::any_origin()));
        m.request_header_filter(&mut web_request("application/grpc-web+proto"))
            .await
            .unwrap();
        assert!(m.early_response().is_none());
        let mut resp = grpc_response();
        m.response_header_filter(&mut resp, false).await.unwrap();
        assert_eq!(resp.headers["access-control-allow-origin"], "*");
        assert_eq!(
            resp.headers["access-control-expose-headers"],
            DEFAULT_EXPOSE_HEADERS
        );
    }

    #[tokio::test]
    async fn pingoras_form_waits_for_init() {
        let mut modules = HttpModules::new();
        modules.add_module(Box::new(GrpcWeb));
        let mut m = modules.build_ctx();
        let mut req = web_request("application/grpc-web");
        m.request_header_filter(&mut req).await.unwrap();
        assert_eq!(req.headers["content-type"], "application/grpc-web");
        let mut m = modules.build_ctx();
        m.get_mut::<GrpcWebBridge>().unwrap().init();
        m.request_header_filter(&mut req).await.unwrap();
        assert_eq!(req.headers["content-type"], "application/grpc");
        assert_eq!(**m.get::<GrpcWebBridge>().unwrap(), GrpcWebCtx::Upgrade);
    }

    #[tokio::test]
    async fn bad_text_is_refused_with_400() {
        let mut m = bridge(None);
        m.request_header_filter(&mut web_request("application/grpc-web-text"))
            .await
            .unwrap();
        let mut body = Some(Bytes::from_static(b"A@=="));
        let e = m.request_body_filter(&mut body, true).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(400));
    }
}
