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

/// A frame refused before decoding: JSON-RPC error code and message.
pub type Refusal = (i64, String);

/// Adapter over an axum socket (server side of `/ws`). Every frame passes
/// `check` first; a refused or undecodable frame is answered with a JSON-RPC
/// error on the socket (id `null`) and never reaches rmcp.
pub fn axum_socket<R: ServiceRole>(
    ws: axum::extract::ws::WebSocket,
    check: impl Fn(&[u8]) -> Result<(), Refusal> + Send + Sync + 'static,
) -> (
    impl Sink<TxJsonRpcMessage<R>, Error = axum::Error> + Send + Unpin + 'static,
    impl Stream<Item = RxJsonRpcMessage<R>> + Send + Unpin + 'static,
) {
    use axum::extract::ws::Message as AxMessage;
    let (mut socket_tx, socket_rx) = ws.split();
    // One writer owns the socket, so both rmcp's messages and our error replies reach it.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<AxMessage>(64);
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if socket_tx.send(m).await.is_err() {
                return;
            }
        }
        let _ = socket_tx.close().await;
    });
    let errors = out_tx.clone();
    let tx = tokio_util::sync::PollSender::new(out_tx).sink_map_err(axum::Error::new).with(|m: TxJsonRpcMessage<R>| {
        future::ready(serde_json::to_string(&m).map(|s| AxMessage::Text(s.into())).map_err(axum::Error::new))
    });
    let rx =
        socket_rx.take_while(|f| future::ready(!matches!(f, Err(_) | Ok(AxMessage::Close(_))))).filter_map(move |f| {
            let bytes: Option<Vec<u8>> = match f {
                Ok(AxMessage::Text(t)) => Some(t.as_str().as_bytes().to_vec()),
                Ok(AxMessage::Binary(b)) => Some(b.to_vec()),
                _ => None,
            };
            let decoded = bytes.map(|b| match check(&b) {
                Err(refusal) => Err(refusal),
                Ok(()) => serde_json::from_slice::<RxJsonRpcMessage<R>>(&b)
                    .map_err(|e| (-32600, format!("invalid request: not a JSON-RPC message: {e}"))),
            });
            let message = match decoded {
                Some(Ok(m)) => Some(m),
                Some(Err((code, message))) => {
                    let reply =
                        serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
                    // Dropped if the writer is backed up: a flood of bad frames gets no more than that.
                    let _ = errors.try_send(AxMessage::Text(reply.to_string().into()));
                    None
                }
                None => None,
            };
            future::ready(message)
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
