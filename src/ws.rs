//! MCP over WebSocket: one JSON-RPC message per text frame.
//!
//! rmcp has no WebSocket transport, but accepts any `(Sink, Stream)` pair of
//! JSON-RPC messages. These adapters turn a tokio-tungstenite socket (the
//! upstream client side) and an axum socket (the `/ws` server side) into such
//! pairs. A frame that is not a valid message is dropped with a warning, as a
//! line of garbage is on stdio.

use futures::{Sink, SinkExt, Stream, StreamExt, future};
use rmcp::service::{RxJsonRpcMessage, ServiceRole, TxJsonRpcMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Adapter over a tokio-tungstenite socket, for either role.
pub fn tungstenite<R, S>(
    ws: WebSocketStream<S>,
) -> (
    impl Sink<TxJsonRpcMessage<R>, Error = WsError> + Send + Unpin + 'static,
    impl Stream<Item = RxJsonRpcMessage<R>> + Send + Unpin + 'static,
)
where
    R: ServiceRole,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = ws.split();
    let tx = tx.with(|m: TxJsonRpcMessage<R>| {
        future::ready(
            serde_json::to_string(&m)
                .map(|s| Message::Text(s.into()))
                .map_err(|e| WsError::Io(std::io::Error::other(e))),
        )
    });
    let rx = rx.take_while(|f| future::ready(!matches!(f, Err(_) | Ok(Message::Close(_))))).filter_map(|f| {
        future::ready(match f {
            Ok(Message::Text(t)) => decode::<R>(t.as_str()),
            Ok(Message::Binary(b)) => std::str::from_utf8(&b).ok().and_then(decode::<R>),
            _ => None,
        })
    });
    (tx, rx)
}

/// Adapter over an axum socket (server side of `/ws`).
pub fn axum_socket<R: ServiceRole>(
    ws: axum::extract::ws::WebSocket,
) -> (
    impl Sink<TxJsonRpcMessage<R>, Error = axum::Error> + Send + Unpin + 'static,
    impl Stream<Item = RxJsonRpcMessage<R>> + Send + Unpin + 'static,
) {
    use axum::extract::ws::Message as AxMessage;
    let (tx, rx) = ws.split();
    let tx = tx.with(|m: TxJsonRpcMessage<R>| {
        future::ready(serde_json::to_string(&m).map(|s| AxMessage::Text(s.into())).map_err(axum::Error::new))
    });
    let rx = rx.take_while(|f| future::ready(!matches!(f, Err(_) | Ok(AxMessage::Close(_))))).filter_map(|f| {
        future::ready(match f {
            Ok(AxMessage::Text(t)) => decode::<R>(t.as_str()),
            Ok(AxMessage::Binary(b)) => std::str::from_utf8(&b).ok().and_then(decode::<R>),
            _ => None,
        })
    });
    (tx, rx)
}

fn decode<R: ServiceRole>(text: &str) -> Option<RxJsonRpcMessage<R>> {
    match serde_json::from_str(text) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "dropping a websocket frame that is not a JSON-RPC message");
            None
        }
    }
}
