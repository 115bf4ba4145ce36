//! The kinds of error, where they come from, and whether to retry.

/// What went wrong. The names follow Pingora's, so matching code ports
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    // --- connecting to an upstream ---
    /// The TCP connect did not finish in time.
    ConnectTimedout,
    /// The peer refused the connection (RST on SYN).
    ConnectRefused,
    /// No route to the peer's address.
    ConnectNoRoute,
    /// The TLS handshake failed.
    TLSHandshakeFailure,
    /// The TLS handshake did not finish in time.
    TLSHandshakeTimedout,
    /// The peer's certificate failed verification (for a reason other than
    /// the more precise kinds below).
    InvalidCert,
    /// The peer's certificate does not match the expected host name.
    CertHostnameMismatch,
    /// The peer's certificate (or one in its chain) has expired or is not
    /// yet valid.
    CertExpired,
    /// The peer's certificate is not signed by a trusted CA.
    CertUnknownCA,
    /// A protocol handshake other than TLS failed (e.g. PROXY protocol).
    HandshakeError,
    /// Connecting failed for another reason.
    ConnectError,
    /// Binding the local address of an outgoing connection failed.
    BindError,
    /// Accepting a connection failed.
    AcceptError,
    /// Applying a socket option failed.
    SocketError,
    /// The connection proxy (e.g. CONNECT through another proxy) failed.
    ConnectProxyFailure,
    // --- protocol ---
    /// An HTTP header could not be parsed or is not allowed.
    InvalidHTTPHeader,
    /// HTTP/1 protocol violation.
    H1Error,
    /// HTTP/2 protocol or stream error.
    H2Error,
    /// An HTTP/2 connection was expected but the peer negotiated HTTP/1.
    H2Downgrade,
    /// HTTP/2 was negotiated but the peer does not speak it.
    InvalidH2,
    /// The request or response header is larger than allowed.
    HeaderTooLarge,
    /// The request URI is longer than allowed.
    UriTooLong,
    /// The body is larger than allowed.
    BodyTooLarge,
    // --- I/O ---
    /// Reading from a socket failed.
    ReadError,
    /// Writing to a socket failed.
    WriteError,
    /// A read did not finish in time.
    ReadTimedout,
    /// A write did not finish in time.
    WriteTimedout,
    /// The peer closed the connection early.
    ConnectionClosed,
    // --- application ---
    /// An HTTP status to send back as the answer.
    HTTPStatus(u16),
    /// Opening a file failed.
    FileOpenError,
    /// Creating a file failed.
    FileCreateError,
    /// Reading a file failed.
    FileReadError,
    /// Writing a file failed.
    FileWriteError,
    /// Bad input from a user or configuration.
    InvalidInput,
    /// A configuration file or value is wrong.
    ConfError,
    /// A general timeout, not tied to one socket operation.
    Timedout,
    /// A bug or an impossible state in our own code.
    InternalError,
    /// Nobody knows.
    UnknownError,
    /// A kind of the user's own.
    Custom(&'static str),
    /// A kind of the user's own, with an HTTP status to answer with.
    CustomCode(&'static str, u16),
}

impl ErrorType {
    /// A custom kind named `name` (for `const MY_ERROR: ErrorType = ..`).
    pub const fn new(name: &'static str) -> Self {
        ErrorType::Custom(name)
    }

    /// A custom kind named `name` that answers with HTTP status `code`.
    pub const fn new_code(name: &'static str, code: u16) -> Self {
        ErrorType::CustomCode(name, code)
    }

    /// The kind's name, e.g. `"ConnectTimedout"`; custom kinds give their
    /// own name.
    pub fn as_str(&self) -> &'static str {
        use ErrorType::*;
        match self {
            ConnectTimedout => "ConnectTimedout",
            ConnectRefused => "ConnectRefused",
            ConnectNoRoute => "ConnectNoRoute",
            TLSHandshakeFailure => "TLSHandshakeFailure",
            TLSHandshakeTimedout => "TLSHandshakeTimedout",
            InvalidCert => "InvalidCert",
            CertHostnameMismatch => "CertHostnameMismatch",
            CertExpired => "CertExpired",
            CertUnknownCA => "CertUnknownCA",
            HandshakeError => "HandshakeError",
            ConnectError => "ConnectError",
            BindError => "BindError",
            AcceptError => "AcceptError",
            SocketError => "SocketError",
            ConnectProxyFailure => "ConnectProxyFailure",
            InvalidHTTPHeader => "InvalidHTTPHeader",
            H1Error => "H1Error",
            H2Error => "H2Error",
            H2Downgrade => "H2Downgrade",
            InvalidH2 => "InvalidH2",
            HeaderTooLarge => "HeaderTooLarge",
            UriTooLong => "UriTooLong",
            BodyTooLarge => "BodyTooLarge",
            ReadError => "ReadError",
            WriteError => "WriteError",
            ReadTimedout => "ReadTimedout",
            WriteTimedout => "WriteTimedout",
            ConnectionClosed => "ConnectionClosed",
            HTTPStatus(_) => "HTTPStatus",
            FileOpenError => "FileOpenError",
            FileCreateError => "FileCreateError",
            FileReadError => "FileReadError",
            FileWriteError => "FileWriteError",
            InvalidInput => "InvalidInput",
            ConfError => "ConfError",
            Timedout => "Timedout",
            InternalError => "InternalError",
            UnknownError => "UnknownError",
            Custom(s) | CustomCode(s, _) => s,
        }
    }

    /// Whether an error of this kind is retryable when nothing else is
    /// known: failures that happen before any request byte reached the peer
    /// (connect refused or timed out, no route) are safe to try elsewhere.
    pub fn default_retry(&self) -> bool {
        matches!(
            self,
            ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectNoRoute
        )
    }

    /// The HTTP status a server should answer with for this kind, when it
    /// has a natural one.
    pub fn http_status(&self) -> Option<u16> {
        use ErrorType::*;
        Some(match self {
            HTTPStatus(c) | CustomCode(_, c) => *c,
            HeaderTooLarge => 431,
            UriTooLong => 414,
            BodyTooLarge => 413,
            InvalidHTTPHeader | H1Error => 400,
            ReadTimedout => 408,
            _ => return None,
        })
    }
}

/// Whose fault an error is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The upstream server we proxy to.
    Upstream,
    /// The downstream client.
    Downstream,
    /// Our own code.
    Internal,
    /// Not (yet) decided.
    Unset,
}

impl ErrorSource {
    /// `"Upstream"`, `"Downstream"`, `"Internal"`, or `""` when unset.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorSource::Upstream => "Upstream",
            ErrorSource::Downstream => "Downstream",
            ErrorSource::Internal => "Internal",
            ErrorSource::Unset => "",
        }
    }
}

/// Whether an operation that failed may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryType {
    /// Retry, or not, as decided.
    Decided(bool),
    /// Retry only if the failure happened on a reused connection (a stale
    /// keep-alive connection the peer had closed).
    ReusedOnly,
}

impl RetryType {
    /// `true` only for `Decided(true)`.
    pub fn retry(&self) -> bool {
        matches!(self, RetryType::Decided(true))
    }

    /// Settle `ReusedOnly` now that it is known whether the connection was
    /// a reused one; a decided retry stays as it is.
    pub fn decide_reuse(&mut self, reused: bool) {
        if matches!(self, RetryType::ReusedOnly) {
            *self = RetryType::Decided(reused);
        }
    }
}

impl From<bool> for RetryType {
    fn from(b: bool) -> Self {
        RetryType::Decided(b)
    }
}
