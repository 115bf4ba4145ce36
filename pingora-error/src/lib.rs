//! The one error type used across the framework.
//!
//! Every layer (listeners, TLS, HTTP sessions, connectors, the proxy) reports
//! failure as a [`BError`] (a boxed [`Error`]). An error carries:
//!
//! - a **kind** ([`ErrorType`]): what went wrong, e.g. `ConnectTimedout`;
//! - a **source** ([`ErrorSource`]): whose fault it was: the upstream, the
//!   downstream client, or ourselves;
//! - a **retry** decision ([`RetryType`]): may the proxy try again elsewhere;
//! - an optional **context** string: the detail a log reader needs;
//! - an optional **cause**: the error underneath, so the whole chain can be
//!   walked with [`Error::chain`] or printed.
//!
//! Its [`Display`](std::fmt::Display) is one log line, with the chain
//! included and line breaks escaped.
//!
//! Foreign errors are wrapped in one call with [`OrErr`], options turned into
//! errors with [`OkOrErr`], and more context attached on the way up with
//! [`Context`].
//!
//! ```
//! use pingora_error::{Error, ErrorType, OrErr, Result};
//!
//! fn parse_port(s: &str) -> Result<u16> {
//!     s.parse::<u16>()
//!         .or_err_with(ErrorType::InvalidInput, || format!("bad port {s:?}"))
//! }
//!
//! let err = parse_port("http").unwrap_err();
//! assert_eq!(err.etype(), &ErrorType::InvalidInput);
//! assert!(err.to_string().contains("bad port \"http\""));
//! assert!(err.to_string().contains("invalid digit"));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

mod convert;
mod kind;
pub use convert::{Context, OkOrErr, OrErr};
pub use kind::{ErrorSource, ErrorType, RetryType};

/// One of our errors in a cause chain, whether it went in as an `Error`
/// or as a `BError` (`Error::because(.., e)` with `e: BError` stores the
/// box itself).
fn ours<'a>(c: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    c.downcast_ref::<Error>()
        .or_else(|| c.downcast_ref::<BError>().map(|b| &**b))
}

/// The standard error trait, under the name Pingora gives it.
pub use std::error::Error as ErrorTrait;

/// An error's context text: a static string, or one made at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImmutStr {
    /// A string in the program.
    Static(&'static str),
    /// A string made at run time.
    Owned(Box<str>),
}

impl ImmutStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            ImmutStr::Static(s) => s,
            ImmutStr::Owned(s) => s,
        }
    }

    /// Whether the text was made at run time.
    pub fn is_owned(&self) -> bool {
        matches!(self, ImmutStr::Owned(_))
    }
}

impl std::ops::Deref for ImmutStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ImmutStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for ImmutStr {
    fn from(s: &'static str) -> Self {
        ImmutStr::Static(s)
    }
}

impl From<String> for ImmutStr {
    fn from(s: String) -> Self {
        ImmutStr::Owned(s.into_boxed_str())
    }
}

impl From<Box<str>> for ImmutStr {
    fn from(s: Box<str>) -> Self {
        ImmutStr::Owned(s)
    }
}

impl From<Cow<'static, str>> for ImmutStr {
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(s) => ImmutStr::Static(s),
            Cow::Owned(s) => s.into(),
        }
    }
}

/// A boxed [`Error`]; the error half of every [`Result`] in the framework.
///
/// Boxed so that `Result<T>` stays one pointer wide on the error path.
pub type BError = Box<Error>;

/// `Result` with [`BError`] as the default error type.
pub type Result<T, E = BError> = std::result::Result<T, E>;

/// Any error that can sit in a cause chain.
pub type Cause = Box<dyn StdError + Send + Sync>;

/// The framework's error: kind, source, retry decision, context and cause.
#[derive(Debug)]
pub struct Error {
    /// What went wrong.
    pub etype: ErrorType,
    /// Whose fault it was.
    pub esource: ErrorSource,
    /// Whether the operation may be retried.
    pub retry: RetryType,
    /// The error underneath, if any.
    pub cause: Option<Cause>,
    /// Human readable detail.
    pub context: Option<ImmutStr>,
}

impl Error {
    // The constructors are `#[cold]`: errors are the rare path, and this
    // keeps their code out of the hot functions that can fail (the
    // per-request path's instruction-cache footprint, docs/BENCHMARKS.md).
    #[cold]
    fn build(
        etype: ErrorType,
        esource: ErrorSource,
        context: Option<ImmutStr>,
        cause: Option<Cause>,
    ) -> BError {
        let retry = RetryType::Decided(etype.default_retry());
        Box::new(Error {
            etype,
            esource,
            retry,
            cause,
            context,
        })
    }

    /// A new error of this kind, source unset, with no context or cause.
    #[cold]
    pub fn new(etype: ErrorType) -> BError {
        Self::build(etype, ErrorSource::Unset, None, None)
    }

    /// A new error caused by the upstream (the server we proxy to).
    #[cold]
    pub fn new_up(etype: ErrorType) -> BError {
        Self::build(etype, ErrorSource::Upstream, None, None)
    }

    /// A new error caused by the downstream (the client).
    #[cold]
    pub fn new_down(etype: ErrorType) -> BError {
        Self::build(etype, ErrorSource::Downstream, None, None)
    }

    /// A new error that is our own fault.
    #[cold]
    pub fn new_in(etype: ErrorType) -> BError {
        Self::build(etype, ErrorSource::Internal, None, None)
    }

    /// A new error with a context string and no cause.
    #[cold]
    pub fn explain<S: Into<ImmutStr>>(etype: ErrorType, context: S) -> BError {
        Self::build(etype, ErrorSource::Unset, Some(context.into()), None)
    }

    /// `Err(Error::explain(..))`, for early returns.
    ///
    /// # Errors
    ///
    /// Always: an `etype` error with `context`, source unset.
    #[cold]
    pub fn e_explain<T, S: Into<ImmutStr>>(etype: ErrorType, context: S) -> Result<T> {
        Err(Self::explain(etype, context))
    }

    /// A new error with a context string, wrapping `cause`.
    #[cold]
    pub fn because<S: Into<ImmutStr>, E: Into<Cause>>(
        etype: ErrorType,
        context: S,
        cause: E,
    ) -> BError {
        Self::build(
            etype,
            ErrorSource::Unset,
            Some(context.into()),
            Some(cause.into()),
        )
    }

    /// `Err(Error::because(..))`, for early returns.
    ///
    /// # Errors
    ///
    /// Always: an `etype` error with `context`, wrapping `cause`, source unset.
    #[cold]
    pub fn e_because<T, S: Into<ImmutStr>, E: Into<Cause>>(
        etype: ErrorType,
        context: S,
        cause: E,
    ) -> Result<T> {
        Err(Self::because(etype, context, cause))
    }

    /// `Err(Error::new(..))`, for early returns.
    ///
    /// # Errors
    ///
    /// Always: a bare `etype` error, source unset.
    #[cold]
    pub fn e_new<T>(etype: ErrorType) -> Result<T> {
        Err(Self::new(etype))
    }

    /// The kind of this error.
    pub fn etype(&self) -> &ErrorType {
        &self.etype
    }

    /// Whose fault this error is.
    pub fn esource(&self) -> &ErrorSource {
        &self.esource
    }

    /// The context string, if any.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The kind as a short static string, e.g. `"ConnectTimedout"`.
    pub fn reason_str(&self) -> &str {
        self.etype.as_str()
    }

    /// Whether the operation may be retried.
    ///
    /// [`RetryType::ReusedOnly`] counts as retryable only after
    /// [`Error::set_reused`] marked the connection as a reused one.
    pub fn retry(&self) -> bool {
        self.retry.retry()
    }

    /// Decide whether the operation may be retried.
    pub fn set_retry(&mut self, retry: bool) {
        self.retry = RetryType::Decided(retry);
    }

    /// Record that the error happened on a reused connection: a
    /// [`RetryType::ReusedOnly`] error then becomes retryable, because a
    /// fresh connection may well succeed where a stale one failed.
    pub fn set_reused(&mut self) {
        if self.retry == RetryType::ReusedOnly {
            self.retry = RetryType::Decided(true);
        }
    }

    /// Set whose fault this error is.
    pub fn set_esource(&mut self, esource: ErrorSource) {
        self.esource = esource;
    }

    /// Set the kind of this error.
    pub fn set_etype(&mut self, etype: ErrorType) {
        self.etype = etype;
    }

    /// Mark as the upstream's fault and return self, for chaining.
    #[cold]
    pub fn into_up(mut self: BError) -> BError {
        self.esource = ErrorSource::Upstream;
        self
    }

    /// Mark as the downstream's fault and return self, for chaining.
    #[cold]
    pub fn into_down(mut self: BError) -> BError {
        self.esource = ErrorSource::Downstream;
        self
    }

    /// Mark as our own fault and return self, for chaining.
    #[cold]
    pub fn into_in(mut self: BError) -> BError {
        self.esource = ErrorSource::Internal;
        self
    }

    /// Prepend more context: `"more: old context"`; the error comes back
    /// (as Pingora's: `e.more_context(..)` in a `map_err`).
    #[cold]
    pub fn more_context<S: Into<ImmutStr>>(mut self: BError, more: S) -> BError {
        self.add_context(more);
        self
    }

    /// [`more_context`](Self::more_context) in place.
    pub fn add_context<S: Into<ImmutStr>>(&mut self, more: S) {
        let more = more.into();
        self.context = Some(match self.context.take() {
            Some(old) => format!("{more}: {old}").into(),
            None => more,
        });
    }

    /// A new error of every part given (Pingora's general constructor).
    #[cold]
    pub fn create(
        etype: ErrorType,
        esource: ErrorSource,
        context: Option<ImmutStr>,
        cause: Option<Cause>,
    ) -> BError {
        Self::build(etype, esource, context, cause)
    }

    /// A new error of a custom kind named `s`.
    #[cold]
    pub fn new_str(s: &'static str) -> BError {
        Self::new(ErrorType::Custom(s))
    }

    /// `Err(Error::new(etype))`.
    ///
    /// # Errors
    ///
    /// Always: a bare `etype` error, source unset.
    #[cold]
    pub fn err<T>(etype: ErrorType) -> Result<T> {
        Err(Self::new(etype))
    }

    /// `Err(Error::new_up(etype))`.
    ///
    /// # Errors
    ///
    /// Always: a bare `etype` error, source `Upstream`.
    #[cold]
    pub fn err_up<T>(etype: ErrorType) -> Result<T> {
        Err(Self::new_up(etype))
    }

    /// `Err(Error::new_down(etype))`.
    ///
    /// # Errors
    ///
    /// Always: a bare `etype` error, source `Downstream`.
    #[cold]
    pub fn err_down<T>(etype: ErrorType) -> Result<T> {
        Err(Self::new_down(etype))
    }

    /// `Err(Error::new_in(etype))`.
    ///
    /// # Errors
    ///
    /// Always: a bare `etype` error, source `Internal`.
    #[cold]
    pub fn err_in<T>(etype: ErrorType) -> Result<T> {
        Err(Self::new_in(etype))
    }

    /// `Err(self)`.
    ///
    /// # Errors
    ///
    /// Always: this error, unchanged.
    pub fn into_err<T>(self: BError) -> Result<T> {
        Err(self)
    }

    /// The source as a string (`""` when unset).
    pub fn source_str(&self) -> &str {
        self.esource.as_str()
    }

    /// Mark the error as the upstream's fault, in place.
    pub fn as_up(&mut self) {
        self.esource = ErrorSource::Upstream;
    }

    /// Mark the error as the downstream client's fault, in place.
    pub fn as_down(&mut self) {
        self.esource = ErrorSource::Downstream;
    }

    /// Mark the error as our own fault, in place.
    pub fn as_in(&mut self) {
        self.esource = ErrorSource::Internal;
    }

    /// Replace the cause.
    pub fn set_cause<C: Into<Cause>>(&mut self, cause: C) {
        self.cause = Some(cause.into());
    }

    /// Replace the context.
    pub fn set_context<S: Into<ImmutStr>>(&mut self, context: S) {
        self.context = Some(context.into());
    }

    /// The kind of the innermost of our errors in the cause chain.
    pub fn root_etype(&self) -> &ErrorType {
        let mut root = self;
        while let Some(inner) = root
            .cause
            .as_deref()
            .and_then(|c| ours(c as &(dyn StdError + 'static)))
        {
            root = inner;
        }
        &root.etype
    }

    /// Wrap this error as the cause of a new one of kind `etype`; the new
    /// error keeps this one's source and retry decision.
    #[cold]
    pub fn wrap<S: Into<ImmutStr>>(self: BError, etype: ErrorType, context: S) -> BError {
        let esource = self.esource.clone();
        let retry = self.retry;
        let mut e = Self::build(etype, esource, Some(context.into()), Some(self));
        e.retry = retry;
        e
    }

    /// Iterate over this error and every cause beneath it, outermost first.
    pub fn chain(&self) -> Chain<'_> {
        Chain {
            next: Some(self as &(dyn StdError + 'static)),
        }
    }

    /// The innermost error of the chain (this error if it has no cause).
    pub fn root_cause(&self) -> &(dyn StdError + 'static) {
        self.chain().last().unwrap_or(self)
    }

    /// Walk the chain for the first cause of concrete type `E`, e.g. an
    /// `std::io::Error` deep inside a TLS error.
    pub fn find_cause<E: StdError + 'static>(&self) -> Option<&E> {
        self.chain().find_map(|e| e.downcast_ref::<E>())
    }
}

/// Names the type; its state is not shown.
impl<'a> std::fmt::Debug for Chain<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").finish_non_exhaustive()
    }
}

/// Iterator over an error and its causes; see [`Error::chain`].
pub struct Chain<'a> {
    next: Option<&'a (dyn StdError + 'static)>,
}

impl<'a> Iterator for Chain<'a> {
    type Item = &'a (dyn StdError + 'static);

    fn next(&mut self) -> Option<Self::Item> {
        let cur = self.next?;
        self.next = cur.source();
        Some(cur)
    }
}

/// Write `s` with line breaks escaped so the output stays on one line.
fn write_one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.contains(['\n', '\r']) {
        return f.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            c => fmt::Write::write_char(f, c)?,
        }
    }
    Ok(())
}

/// Adapter so any `Display` can be written through [`write_one_line`].
struct OneLine<'a, T: fmt::Display + ?Sized>(&'a T);

impl<T: fmt::Display + ?Sized> fmt::Display for OneLine<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Render once, then escape: causes may print line breaks.
        let s = self.0.to_string();
        write_one_line(f, &s)
    }
}

impl Error {
    /// Write this error without its cause chain.
    fn fmt_self(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = self.esource.as_str();
        if !source.is_empty() {
            write!(f, "{source} ")?;
        }
        f.write_str(self.etype.as_str())?;
        if let ErrorType::HTTPStatus(code) | ErrorType::CustomCode(_, code) = self.etype {
            write!(f, "({code})")?;
        }
        if let Some(ctx) = &self.context {
            f.write_str(" context: ")?;
            write_one_line(f, ctx)?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    /// One line: `Upstream ConnectTimedout context: ... cause: ...`, where
    /// each cause of the chain is written the same way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_self(f)?;
        let mut cause = self
            .cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static));
        while let Some(c) = cause {
            f.write_str(" cause: ")?;
            if let Some(e) = ours(c) {
                e.fmt_self(f)?;
            } else {
                write!(f, "{}", OneLine(c))?;
            }
            cause = c.source();
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests;
