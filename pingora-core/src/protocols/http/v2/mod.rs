//! HTTP/2 over the `h2` crate. [`server::HttpSession`] is one stream of a
//! server connection, with the same shape as an HTTP/1 session;
//! [`client::H2Connection`] is an upstream connection shared by many
//! [`client::Http2Session`]s.

pub mod client;
pub mod server;

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use pingora_error::{Error, ErrorType::*, OrErr, Result};

/// Whom a stream's data goes to: the words of an error, and whose fault it
/// is (an upstream error or a downstream one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// The upstream server (request body).
    Upstream,
    /// The client (response body).
    Client,
}

/// Send `data` on `send` as the receiver's flow-control window allows:
/// wait for credit (each wait up to `limit`) rather than buffering
/// without bound. `sent` counts the bytes handed to the stream.
pub(crate) async fn send_with_credit(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    limit: Option<Duration>,
    to: Receiver,
    sent: &mut u64,
) -> Result<()> {
    let blame = |e: Box<Error>| match to {
        Receiver::Upstream => e.into_up(),
        Receiver::Client => e.into_down(),
    };
    let (no_credit, closed, sending) = match to {
        Receiver::Upstream => (
            "no flow-control credit from the upstream",
            "upstream closed the stream",
            "sending request data",
        ),
        Receiver::Client => (
            "no flow-control credit from the client",
            "client closed the stream",
            "sending response data",
        ),
    };
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let credit = poll_fn(|cx| send.poll_capacity(cx));
        let credit = match limit {
            Some(limit) => pingora_timeout::timeout(limit, credit)
                .await
                .map_err(|_| blame(Error::explain(WriteTimedout, no_credit)))?,
            None => credit.await,
        };
        let granted = match credit {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                return Err(blame(Error::because(
                    H2Error,
                    "waiting for flow-control credit",
                    e,
                )))
            }
            None => return Err(blame(Error::explain(H2Error, closed))),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        *sent += chunk.len() as u64;
        send.send_data(chunk, false)
            .or_err(H2Error, sending)
            .map_err(blame)?;
    }
    Ok(())
}
