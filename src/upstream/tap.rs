//! Per-call notifications routed in arrival order.
//!
//! rmcp hands each inbound notification to the handler on its own task, so
//! two progress notifications can reach `ClientHandler::on_progress` in
//! either order, and a log message can be handled after its call has ended.
//! This transport wrapper routes progress and log messages as they are read
//! from the wire, before rmcp's service loop, which keeps them in order and
//! attributes them while their call is still in flight.

use std::future::Future;

use rmcp::RoleClient;
use rmcp::model::{JsonRpcMessage, ServerNotification};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::{IntoTransport, Transport};

use super::inflight::Inflight;
use super::progress::Progress;

pub struct Tap<T> {
    inner: T,
    progress: Progress,
    inflight: Inflight,
}

/// Wraps any upstream transport so its progress notifications are routed in order.
pub fn tap<T, E, A>(transport: T, progress: Progress, inflight: Inflight) -> Tap<impl Transport<RoleClient, Error = E>>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    Tap { inner: transport.into_transport(), progress, inflight }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Tap<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if let JsonRpcMessage::Notification(n) = &message {
            match &n.notification {
                ServerNotification::ProgressNotification(p) => self.progress.dispatch(p.params.clone()),
                #[allow(deprecated)]
                ServerNotification::LoggingMessageNotification(l) => self.inflight.route_log(&l.params),
                _ => {}
            }
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
