//! The conversions into our errors: [`OrErr`] for foreign `Result`s,
//! [`OkOrErr`] for options, [`Context`] to add context on the way up.

use crate::{Cause, Error, ErrorSource, ErrorType, ImmutStr, Result};

/// Turn a foreign `Result` into ours, with a kind and context, in one call.
pub trait OrErr<T, E> {
    /// Wrap the error as the cause of a new error of kind `etype`.
    ///
    /// # Errors
    ///
    /// On `Err(e)`: an `etype` error with `context`, `e` as its cause.
    fn or_err(self, etype: ErrorType, context: &'static str) -> Result<T>
    where
        E: Into<Cause>;

    /// Like [`OrErr::or_err`], with the context built only on error.
    ///
    /// # Errors
    ///
    /// On `Err(e)`: an `etype` error with `context()`, `e` as its cause.
    fn or_err_with<C: Into<ImmutStr>, F: FnOnce() -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T>
    where
        E: Into<Cause>;

    /// Replace the error with a new one of kind `etype`, keeping only the
    /// context (for errors that carry nothing worth keeping).
    ///
    /// # Errors
    ///
    /// On `Err(e)`: an `etype` error with `context(e)` and no cause.
    fn explain_err<C: Into<ImmutStr>, F: FnOnce(E) -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T>;

    /// Wrap the error as an `InternalError` with no context (Pingora's).
    ///
    /// # Errors
    ///
    /// On `Err(e)`: an `InternalError` with `e` as its cause.
    fn or_fail(self) -> Result<T>
    where
        E: Into<Cause>;

    /// Wrap the error with kind `etype` and no context.
    ///
    /// # Errors
    ///
    /// On `Err(e)`: an `etype` error with `e` as its cause.
    fn or_fail_as(self, etype: ErrorType) -> Result<T>
    where
        E: Into<Cause>;
}

impl<T, E> OrErr<T, E> for std::result::Result<T, E> {
    fn or_err(self, etype: ErrorType, context: &'static str) -> Result<T>
    where
        E: Into<Cause>,
    {
        self.map_err(|e| Error::because(etype, context, e))
    }

    fn or_err_with<C: Into<ImmutStr>, F: FnOnce() -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T>
    where
        E: Into<Cause>,
    {
        self.map_err(|e| Error::because(etype, context(), e))
    }

    fn explain_err<C: Into<ImmutStr>, F: FnOnce(E) -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T> {
        self.map_err(|e| Error::explain(etype, context(e)))
    }

    fn or_fail(self) -> Result<T>
    where
        E: Into<Cause>,
    {
        self.or_fail_as(ErrorType::InternalError)
    }

    fn or_fail_as(self, etype: ErrorType) -> Result<T>
    where
        E: Into<Cause>,
    {
        self.map_err(|e| Error::build(etype, ErrorSource::Unset, None, Some(e.into())))
    }
}

/// Turn an `Option` into a `Result` with a kind and context.
pub trait OkOrErr<T> {
    /// `None` becomes an error of kind `etype` with this context.
    ///
    /// # Errors
    ///
    /// On `None`: an `etype` error with `context`.
    fn or_err(self, etype: ErrorType, context: &'static str) -> Result<T>;

    /// Like [`OkOrErr::or_err`], with the context built only on `None`.
    ///
    /// # Errors
    ///
    /// On `None`: an `etype` error with `context()`.
    fn or_err_with<C: Into<ImmutStr>, F: FnOnce() -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T>;
}

impl<T> OkOrErr<T> for Option<T> {
    fn or_err(self, etype: ErrorType, context: &'static str) -> Result<T> {
        self.ok_or_else(|| Error::explain(etype, context))
    }

    fn or_err_with<C: Into<ImmutStr>, F: FnOnce() -> C>(
        self,
        etype: ErrorType,
        context: F,
    ) -> Result<T> {
        self.ok_or_else(|| Error::explain(etype, context()))
    }
}

/// Add context to one of our own errors on its way up.
pub trait Context<T> {
    /// Prepend context to the error, built only on error.
    ///
    /// # Errors
    ///
    /// On `Err(e)`: `e`, its kind unchanged, with `context()` prepended.
    fn err_context<C: Into<ImmutStr>, F: FnOnce() -> C>(self, context: F) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn err_context<C: Into<ImmutStr>, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|e| e.more_context(context()))
    }
}
