//! HTTP modules, as Pingora's: per-request filters that a service
//! registers once ([`HttpModules::add_module`]) and that run, in order, on
//! every request's header, body and trailers.
//!
//! ```
//! use std::any::Any;
//! use async_trait::async_trait;
//! use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
//! use pingora_error::Result;
//! use pingora_http::ResponseHeader;
//!
//! /// Marks every response; counts the body bytes it saw.
//! #[derive(Default)]
//! struct Stamp {
//!     bytes: usize,
//! }
//!
//! #[async_trait]
//! impl HttpModule for Stamp {
//!     async fn response_header_filter(&mut self, resp: &mut ResponseHeader, _eos: bool) -> Result<()> {
//!         resp.insert_header("X-Stamp", "1")
//!     }
//!     fn response_body_filter(&mut self, body: &mut Option<bytes::Bytes>, _eos: bool) -> Result<()> {
//!         self.bytes += body.as_ref().map_or(0, |b| b.len());
//!         Ok(())
//!     }
//!     fn as_any(&self) -> &dyn Any { self }
//!     fn as_any_mut(&mut self) -> &mut dyn Any { self }
//! }
//!
//! /// Makes a fresh `Stamp` for each request.
//! struct StampBuilder;
//!
//! impl HttpModuleBuilder for StampBuilder {
//!     fn init(&self) -> Module {
//!         Box::new(Stamp::default())
//!     }
//! }
//!
//! let mut modules = HttpModules::new();
//! modules.add_module(Box::new(StampBuilder));
//! // The proxy builds one context per request and runs the filters.
//! let ctx = modules.build_ctx();
//! assert_eq!(ctx.get::<Stamp>().unwrap().bytes, 0);
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::protocols::http::ServerSession;

pub mod compression;
pub mod grpc_web;
pub mod rate_limit;

/// The future an async filter returns, as `#[async_trait]` makes it.
pub type FilterFuture<'f> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'f>>;

/// `Ok(())` at once. Zero-sized, so boxing it as a [`FilterFuture`]
/// allocates nothing: a filter a module does not override costs no
/// allocation per request (an `async fn` default would box its
/// arguments). A filter with nothing to wait for can return it too.
#[derive(Debug, Clone, Copy, Default)]
pub struct Done;

impl Future for Done {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A filter's answer when it had nothing to wait for: `Ok` as the
/// zero-sized [`Done`], an error as a ready future (no allocation either
/// way). For filters written out in the [`FilterFuture`] form.
pub fn finished<'f>(result: Result<()>) -> FilterFuture<'f> {
    match result {
        Ok(()) => Box::pin(Done),
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

/// One module's per-request state and filters. Every filter has a
/// default that does nothing; `as_any`/`as_any_mut` let the user's
/// phases find the module by type ([`HttpModuleCtx::get`]).
///
/// Implement it with `#[async_trait]` on the `impl` block and `async fn`
/// filters, as with Pingora. (The async filters' defaults are written out
/// in the form `#[async_trait]` gives them, so that they need not
/// allocate; an `async fn` override matches them.)
#[async_trait]
pub trait HttpModule {
    /// Our addition: the client's session (its address, TLS digest), shown
    /// once before `request_header_filter`, for a module that needs them
    /// (a per-client rate limit).
    fn downstream_session(&mut self, _session: &ServerSession) {}

    /// The request header, after `early_request_filter` and before
    /// `request_filter`.
    fn request_header_filter<'s, 'a, 'f>(
        &'s mut self,
        _req: &'a mut RequestHeader,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Our addition: a response (header and body) that answers the request
    /// in place of the proxy, asked after every module's
    /// `request_header_filter`; the first module with one wins. The
    /// request goes no further (no `request_filter`, no upstream); the
    /// response passes the modules' response filters, `logging` runs, and
    /// the connection stays open. What a rate limit's 429 or an auth
    /// module's 401 needs.
    fn early_response(&mut self) -> Option<(Box<ResponseHeader>, Bytes)> {
        None
    }

    /// Each piece of the request body, before `request_body_filter`.
    fn request_body_filter<'s, 'a, 'f>(
        &'s mut self,
        _body: &'a mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// The response header, after `response_filter` (or as the user's code
    /// writes one).
    fn response_header_filter<'s, 'a, 'f>(
        &'s mut self,
        _resp: &'a mut ResponseHeader,
        _end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Each piece of the response body, after `response_body_filter`.
    ///
    /// # Errors
    ///
    /// None from the default. An implementation's error skips the modules
    /// after it, and the proxy fails the request with it (`fail_to_proxy`).
    fn response_body_filter(
        &mut self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// The response trailers; bytes returned go as the last piece of
    /// body instead.
    ///
    /// # Errors
    ///
    /// None from the default. An implementation's error skips the modules
    /// after it, and the proxy fails the request with it (`fail_to_proxy`).
    fn response_trailer_filter(
        &mut self,
        _trailers: &mut Option<Box<HeaderMap>>,
    ) -> Result<Option<Bytes>> {
        Ok(None)
    }

    /// The response is done; bytes returned go out as its last piece.
    ///
    /// # Errors
    ///
    /// None from the default. An implementation's error skips the modules
    /// after it, and the proxy fails the request with it (`fail_to_proxy`).
    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    /// The module, to find it by type.
    fn as_any(&self) -> &dyn Any;

    /// The module, to find it by type and change it.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A module instance for one request.
pub type Module = Box<dyn HttpModule + 'static + Send + Sync>;

/// Makes a module's per-request instance.
pub trait HttpModuleBuilder {
    /// Where the module runs among the others: higher first (default 0;
    /// equal orders run in the order they were added).
    fn order(&self) -> i16 {
        0
    }

    /// A new instance, for one request.
    fn init(&self) -> Module;
}

/// A boxed [`HttpModuleBuilder`], as [`HttpModules::add_module`] takes it.
pub type ModuleBuilder = Box<dyn HttpModuleBuilder + 'static + Send + Sync>;

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpModules").finish_non_exhaustive()
    }
}

/// The modules a service runs, as builders.
#[derive(Default)]
pub struct HttpModules {
    modules: Vec<ModuleBuilder>,
    /// Each module's place by its type, fixed by the first `build_ctx`.
    index: OnceLock<Arc<HashMap<TypeId, usize>>>,
}

impl HttpModules {
    /// No modules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a module.
    ///
    /// # Panics
    ///
    /// Once [`build_ctx`](Self::build_ctx) has built a context (the set is
    /// fixed then).
    pub fn add_module(&mut self, builder: ModuleBuilder) {
        assert!(
            self.index.get().is_none(),
            "HttpModules::add_module after build_ctx"
        );
        self.modules.push(builder);
        // Stable: equal orders keep the order of adding.
        self.modules.sort_by_key(|m| -m.order());
    }

    /// Whether no module was added.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// One instance of each module, for one request.
    ///
    /// # Panics
    ///
    /// If two modules are of the same type (`get` could not tell them
    /// apart); checked when the first context is built.
    pub fn build_ctx(&self) -> HttpModuleCtx {
        if self.modules.is_empty() {
            return HttpModuleCtx::empty();
        }
        let module_ctx: Instances = self.modules.iter().map(|b| b.init()).collect();
        let index = self
            .index
            .get_or_init(|| {
                let mut index = HashMap::with_capacity(module_ctx.len());
                for (i, m) in module_ctx.iter().enumerate() {
                    let t = m.as_any().type_id();
                    assert!(
                        index.insert(t, i).is_none(),
                        "two HTTP modules of the same type"
                    );
                }
                Arc::new(index)
            })
            .clone();
        HttpModuleCtx {
            module_ctx,
            index: Some(index),
        }
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpModuleCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpModuleCtx").finish_non_exhaustive()
    }
}

/// One request's module instances, in running order.
#[derive(Default)]
pub struct HttpModuleCtx {
    module_ctx: Instances,
    index: Option<Arc<HashMap<TypeId, usize>>>,
}

/// The instances of one request, in running order: the first inline, so
/// that a service with one module allocates no list per request.
#[derive(Default)]
struct Instances {
    first: Option<Module>,
    rest: Vec<Module>,
}

impl Instances {
    fn iter(&self) -> impl Iterator<Item = &Module> {
        self.first.iter().chain(self.rest.iter())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Module> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    fn get(&self, i: usize) -> Option<&Module> {
        match i {
            0 => self.first.as_ref(),
            i => self.rest.get(i - 1),
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Module> {
        match i {
            0 => self.first.as_mut(),
            i => self.rest.get_mut(i - 1),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl FromIterator<Module> for Instances {
    fn from_iter<I: IntoIterator<Item = Module>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        Instances {
            first: iter.next(),
            rest: iter.collect(),
        }
    }
}

impl HttpModuleCtx {
    /// No modules.
    pub const fn empty() -> Self {
        HttpModuleCtx {
            module_ctx: Instances {
                first: None,
                rest: Vec::new(),
            },
            index: None,
        }
    }

    /// Whether there is no module.
    pub fn is_empty(&self) -> bool {
        self.module_ctx.is_empty()
    }

    /// The module of type `T`, if there is one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let i = *self.index.as_ref()?.get(&TypeId::of::<T>())?;
        self.module_ctx.get(i)?.as_any().downcast_ref()
    }

    /// The module of type `T`, to change it (say, per request, from the
    /// user's phases).
    pub fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let i = *self.index.as_ref()?.get(&TypeId::of::<T>())?;
        self.module_ctx.get_mut(i)?.as_any_mut().downcast_mut()
    }

    /// Every module's [`HttpModule::downstream_session`], in order.
    pub fn downstream_session(&mut self, session: &ServerSession) {
        for m in self.module_ctx.iter_mut() {
            m.downstream_session(session);
        }
    }

    /// The first module's [`HttpModule::early_response`], in order.
    pub fn early_response(&mut self) -> Option<(Box<ResponseHeader>, Bytes)> {
        self.module_ctx.iter_mut().find_map(|m| m.early_response())
    }

    /// Every module's [`HttpModule::request_header_filter`], in order.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub async fn request_header_filter(&mut self, req: &mut RequestHeader) -> Result<()> {
        for m in self.module_ctx.iter_mut() {
            m.request_header_filter(req).await?;
        }
        Ok(())
    }

    /// Every module's [`HttpModule::request_body_filter`], in order.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub async fn request_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        for m in self.module_ctx.iter_mut() {
            m.request_body_filter(body, end_of_stream).await?;
        }
        Ok(())
    }

    /// Every module's [`HttpModule::response_header_filter`], in order.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> Result<()> {
        for m in self.module_ctx.iter_mut() {
            m.response_header_filter(resp, end_of_stream).await?;
        }
        Ok(())
    }

    /// Every module's [`HttpModule::response_body_filter`], in order.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub fn response_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        for m in self.module_ctx.iter_mut() {
            m.response_body_filter(body, end_of_stream)?;
        }
        Ok(())
    }

    /// Every module's [`HttpModule::response_trailer_filter`], in order;
    /// the last bytes one returned.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub fn response_trailer_filter(
        &mut self,
        trailers: &mut Option<Box<HeaderMap>>,
    ) -> Result<Option<Bytes>> {
        let mut out = None;
        for m in self.module_ctx.iter_mut() {
            if let Some(b) = m.response_trailer_filter(trailers)? {
                out = Some(b);
            }
        }
        Ok(out)
    }

    /// Every module's [`HttpModule::response_done_filter`], in order; the
    /// last bytes one returned.
    ///
    /// # Errors
    ///
    /// The first error a module returns; the modules after it do not run.
    pub fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        let mut out = None;
        for m in self.module_ctx.iter_mut() {
            if let Some(b) = m.response_done_filter()? {
                out = Some(b);
            }
        }
        Ok(out)
    }
}
