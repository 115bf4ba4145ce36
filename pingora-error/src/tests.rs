use super::*;
use std::io;

#[test]
fn new_sets_kind_and_source() {
    let e = Error::new_up(ErrorType::ConnectRefused);
    assert_eq!(e.etype(), &ErrorType::ConnectRefused);
    assert_eq!(e.esource(), &ErrorSource::Upstream);
    assert!(e.retry(), "connect refused is retryable by default");
    assert_eq!(
        Error::new_down(ErrorType::ReadError).esource,
        ErrorSource::Downstream
    );
    assert_eq!(
        Error::new_in(ErrorType::InternalError).esource,
        ErrorSource::Internal
    );
    assert_eq!(Error::new(ErrorType::ReadError).esource, ErrorSource::Unset);
    assert!(!Error::new(ErrorType::ReadError).retry());
}

#[test]
fn retry_flag() {
    let mut e = Error::new(ErrorType::WriteError);
    assert!(!e.retry());
    e.set_retry(true);
    assert!(e.retry());
    e.retry = RetryType::ReusedOnly;
    assert!(!e.retry());
    e.set_reused();
    assert!(e.retry());
}

#[test]
fn display_is_one_line_with_chain() {
    let io = io::Error::new(io::ErrorKind::TimedOut, "timed\nout");
    let inner =
        Error::because(ErrorType::ConnectTimedout, "connecting to 10.0.0.1:80", io).into_up();
    let outer = inner.wrap(ErrorType::ConnectError, "peer 1 of 2");
    let s = outer.to_string();
    assert_eq!(
        s,
        "Upstream ConnectError context: peer 1 of 2 cause: Upstream ConnectTimedout \
         context: connecting to 10.0.0.1:80 cause: timed\\nout"
    );
    assert!(!s.contains('\n'));
}

#[test]
fn display_status_and_custom() {
    let e = Error::explain(ErrorType::HTTPStatus(502), "bad gateway\r\n");
    assert_eq!(e.to_string(), "HTTPStatus(502) context: bad gateway\\r\\n");
    let e = Error::new_in(ErrorType::Custom("MyKind"));
    assert_eq!(e.to_string(), "Internal MyKind");
    assert_eq!(
        ErrorType::CustomCode("Teapot", 418).http_status(),
        Some(418)
    );
}

#[test]
fn chain_and_root_cause() {
    let io = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
    let e = Error::because(ErrorType::ReadError, "reading header", io)
        .wrap(ErrorType::H1Error, "session");
    assert_eq!(e.chain().count(), 3);
    assert_eq!(e.root_cause().to_string(), "reset");
    let io = e.find_cause::<io::Error>().expect("io error in chain");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    // The wrapped error keeps its own kind, reachable by downcast.
    let mid = e.chain().nth(1).unwrap().downcast_ref::<Error>().unwrap();
    assert_eq!(mid.etype(), &ErrorType::ReadError);
}

#[test]
fn or_err_wraps_foreign_error() {
    let r: std::result::Result<u8, _> = "300".parse::<u8>();
    let e = r
        .or_err(ErrorType::InvalidInput, "parsing weight")
        .unwrap_err();
    assert_eq!(e.etype(), &ErrorType::InvalidInput);
    assert_eq!(e.context(), Some("parsing weight"));
    assert!(e.cause.is_some());

    let r: std::result::Result<(), io::Error> = Err(io::Error::other("disk"));
    let e = r
        .or_err_with(ErrorType::FileReadError, || format!("file {}", 7))
        .unwrap_err();
    assert_eq!(e.to_string(), "FileReadError context: file 7 cause: disk");

    let r: std::result::Result<(), io::Error> = Err(io::Error::other("x"));
    let e = r.or_fail_as(ErrorType::ReadError).unwrap_err();
    assert_eq!(e.to_string(), "ReadError cause: x");

    let r: std::result::Result<(), &str> = Err("plain");
    let e = r
        .explain_err(ErrorType::ConfError, |s| format!("conf: {s}"))
        .unwrap_err();
    assert_eq!(e.to_string(), "ConfError context: conf: plain");
    assert!(e.cause.is_none());
}

#[test]
fn option_or_err() {
    let e = None::<u8>
        .or_err(ErrorType::InvalidInput, "missing")
        .unwrap_err();
    assert_eq!(e.to_string(), "InvalidInput context: missing");
    assert_eq!(
        Some(3).or_err(ErrorType::InvalidInput, "missing").unwrap(),
        3
    );
    let e = None::<u8>
        .or_err_with(ErrorType::InvalidInput, || "lazy".to_string())
        .unwrap_err();
    assert_eq!(e.context(), Some("lazy"));
}

#[test]
fn context_on_our_result() {
    let r: Result<()> = Error::e_explain(ErrorType::ReadError, "inner");
    let e = r.err_context(|| "outer").unwrap_err();
    assert_eq!(e.context(), Some("outer: inner"));
    let r: Result<()> = Error::e_new(ErrorType::ReadError);
    let e = r.err_context(|| "only").unwrap_err();
    assert_eq!(e.context(), Some("only"));
}

#[test]
fn is_send_sync_and_std_error() {
    fn check<T: Send + Sync + std::error::Error + 'static>() {}
    check::<Error>();
    // A BError converts into Box<dyn Error>, so `?` works in main().
    let b: Box<dyn std::error::Error + Send + Sync> = Error::new(ErrorType::ReadError);
    assert_eq!(b.to_string(), "ReadError");
}
