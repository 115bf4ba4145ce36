//! Response compression as an HTTP module (Pingora's
//! `ResponseCompressionBuilder`): gzip, brotli or zstd as the client
//! accepts, streaming, on every proxied response worth it; optionally the
//! upstream's encoding decoded for clients that do not accept it. The
//! decisions are [`ResponseCompressionCtx`]'s.
//!
//! ```
//! use pingora_core::modules::http::compression::ResponseCompressionBuilder;
//! use pingora_core::modules::http::HttpModules;
//!
//! let mut modules = HttpModules::new();
//! // Level 6 for every algorithm.
//! modules.add_module(ResponseCompressionBuilder::enable(6));
//! ```
//!
//! Per request, from the user's phases: `session.downstream_modules_ctx
//! .get_mut::<ResponseCompression>()` and its `adjust_*` methods.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};

use super::{Done, FilterFuture, HttpModule, HttpModuleBuilder, Module, ModuleBuilder};
use crate::protocols::http::compression::ResponseCompressionCtx;

/// The module's per-request state: a [`ResponseCompressionCtx`] (its
/// `adjust_*` methods change this request's settings).
#[derive(Debug)]
pub struct ResponseCompression(ResponseCompressionCtx);

impl Deref for ResponseCompression {
    type Target = ResponseCompressionCtx;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ResponseCompression {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[async_trait::async_trait]
impl HttpModule for ResponseCompression {
    // The filters are written out (not `async fn`): nothing to wait for,
    // and a ready zero-sized future costs no allocation.
    fn request_header_filter<'s, 'a, 'f>(
        &'s mut self,
        req: &'a mut RequestHeader,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        self.0.request_filter(req);
        Box::pin(Done)
    }

    fn response_header_filter<'s, 'a, 'f>(
        &'s mut self,
        resp: &'a mut ResponseHeader,
        end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        self.0.response_header_filter(resp, end_of_stream);
        Box::pin(Done)
    }

    fn response_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> pingora_error::Result<()> {
        if !self.0.is_coding() {
            return Ok(());
        }
        let out = self.0.try_body(body.as_ref(), end_of_stream)?;
        *body = out.filter(|b| !b.is_empty());
        Ok(())
    }

    fn response_done_filter(&mut self) -> pingora_error::Result<Option<Bytes>> {
        // A body whose end never came through the body filter: finish the
        // stream here.
        if !self.0.is_coding() {
            return Ok(None);
        }
        self.0.try_body(None, true)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Makes the compression module for each request.
#[derive(Debug, Clone)]
pub struct ResponseCompressionBuilder {
    level: u32,
    decompress: bool,
    preserve_etag: bool,
    min_length: Option<usize>,
    types: Option<Arc<Vec<String>>>,
}

impl ResponseCompressionBuilder {
    /// Compression at `level` for every algorithm (gzip 1–9, brotli 1–11,
    /// zstd 1–19, each clamped; 0: off until a request's phase turns it
    /// on), as Pingora's.
    pub fn enable(level: u32) -> ModuleBuilder {
        Box::new(Self::new(level))
    }

    /// Ours: the builder itself, to set more before boxing it.
    pub fn new(level: u32) -> Self {
        ResponseCompressionBuilder {
            level,
            decompress: false,
            preserve_etag: false,
            min_length: None,
            types: None,
        }
    }

    /// Ours: decode an upstream's encoding for clients that do not accept
    /// it (default off).
    pub fn decompress(mut self, on: bool) -> Self {
        self.decompress = on;
        self
    }

    /// Ours: keep strong `ETag`s on coded responses (default: made weak).
    pub fn preserve_etag(mut self, on: bool) -> Self {
        self.preserve_etag = on;
        self
    }

    /// Ours: leave responses with a `Content-Length` below `bytes` alone.
    pub fn min_length(mut self, bytes: usize) -> Self {
        self.min_length = Some(bytes);
        self
    }

    /// Ours: the media types to compress (`type/subtype` or `type/*`)
    /// instead of the defaults.
    pub fn content_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = Some(Arc::new(types.into_iter().map(Into::into).collect()));
        self
    }
}

impl HttpModuleBuilder for ResponseCompressionBuilder {
    fn init(&self) -> Module {
        let mut ctx = ResponseCompressionCtx::new(self.level, self.decompress, self.preserve_etag);
        if let Some(n) = self.min_length {
            ctx.adjust_min_length(n);
        }
        if let Some(t) = &self.types {
            ctx.adjust_content_types(t.clone());
        }
        Box::new(ResponseCompression(ctx))
    }
}
