//! W3C trace context through the gateway, and OpenTelemetry spans of the
//! governed call when `[telemetry] otlp_endpoint` is set.
//!
//! An agent's `traceparent` (request `_meta`, else the HTTP header) is
//! validated by OpenTelemetry's own propagator. Without export, tollgate is
//! transparent: the upstream (or LLM provider) gets the agent's context
//! unchanged, so its spans join the agent's trace directly. With export, the
//! call gets a server span parented to the agent's, one child span per
//! pipeline stage, and the upstream is handed the `execute` span's context.
//!
//! Only the call span and the execute span are live while the call runs
//! (the execute span's id has to exist before the upstream is called); the
//! other stage spans are built when the call ends from the stage timings the
//! record already keeps, so tracing adds no work between stages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};

use crate::config::{OtlpProtocol, OtlpSettings};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` accepted from an agent (W3C allows 32 members of
/// at most 256 bytes each; anything longer is not a valid header).
const MAX_TRACESTATE: usize = 8192;

/// Trace context as carried between processes: `traceparent` and `tracestate`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Carrier {
    /// The agent's context: the request's `_meta` first (it belongs to this
    /// request), else the HTTP request's headers. Anything but a valid
    /// `traceparent` is dropped here.
    pub fn incoming(meta: &serde_json::Map<String, serde_json::Value>, headers: Option<&http::HeaderMap>) -> Carrier {
        let from_meta = |k: &str| meta.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        let from_headers = |k: &str| headers.and_then(|h| h.get(k)).and_then(|v| v.to_str().ok()).map(str::to_string);
        let carrier = match from_meta(TRACEPARENT) {
            Some(tp) => Carrier { traceparent: Some(tp), tracestate: from_meta(TRACESTATE) },
            None => Carrier { traceparent: from_headers(TRACEPARENT), tracestate: from_headers(TRACESTATE) },
        };
        carrier.validated()
    }

    /// From HTTP headers alone (`/v1/chat/completions`).
    pub fn from_headers(headers: &http::HeaderMap) -> Carrier {
        Carrier::incoming(&serde_json::Map::new(), Some(headers))
    }

    fn validated(self) -> Carrier {
        if self.traceparent.is_none() {
            return Carrier::default();
        }
        let cx = TraceContextPropagator::new().extract(&self);
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return Carrier::default();
        }
        // Re-serialised by the propagator: what goes on is tollgate's own
        // rendering of a valid context, never the agent's raw bytes.
        let mut out = Carrier::default();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// Header (or `_meta`) name/value pairs to send on.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [(TRACEPARENT, self.traceparent.as_deref()), (TRACESTATE, self.tracestate.as_deref())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref().filter(|s| s.len() <= MAX_TRACESTATE),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// One call's trace: what the agent sent and, when exporting, its live spans.
#[derive(Clone, Default)]
pub struct CallTrace {
    incoming: Carrier,
    /// The call's server span.
    call: Option<Context>,
    /// The execute stage's span, open while the upstream works.
    execute: Option<Context>,
}

impl std::fmt::Debug for CallTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTrace").field("incoming", &self.incoming).field("exporting", &self.call.is_some()).finish()
    }
}

impl CallTrace {
    /// The context the upstream (or LLM provider) is given for this call.
    pub fn outgoing(&self) -> Carrier {
        match self.execute.as_ref().or(self.call.as_ref()) {
            Some(cx) => {
                let mut out = Carrier::default();
                TraceContextPropagator::new().inject_context(cx, &mut out);
                out
            }
            None => self.incoming.clone(),
        }
    }
}

/// How a call ended, for its spans.
pub struct Ended<'a> {
    pub call_id: &'a str,
    pub tool: &'a str,
    pub session: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub decision: &'static str,
    pub status: Option<&'static str>,
    /// Wall-clock start of the first stage.
    pub started: SystemTime,
    /// Stages in order with their microseconds (contiguous from `started`).
    pub stages: &'a [(&'static str, u64)],
}

/// The gateway's tracer: off (the default) or exporting over OTLP/HTTP.
#[derive(Clone, Default)]
pub struct Tracing {
    export: Option<Arc<Export>>,
}

struct Export {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Builds the OTLP exporter. Spans leave in batches from the SDK's own
    /// thread, through tollgate's tokio runtime (see [`TokioHttp`]).
    pub fn start(settings: &OtlpSettings) -> Result<Tracing, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let client = TokioHttp {
            client: reqwest::Client::builder()
                .timeout(settings.timeout)
                .build()
                .map_err(|e| format!("cannot build the OTLP client: {e}"))?,
            rt: tokio::runtime::Handle::current(),
        };
        let protocol = match settings.protocol {
            OtlpProtocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
            OtlpProtocol::Json => opentelemetry_otlp::Protocol::HttpJson,
        };
        let headers: HashMap<String, String> =
            settings.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(settings.traces_url())
            .with_timeout(settings.timeout)
            .with_headers(headers)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(settings.flush_every).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
            .with_resource(
                opentelemetry_sdk::Resource::builder().with_service_name(settings.service_name.clone()).build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Tracing { export: Some(Arc::new(Export { provider, tracer })) })
    }

    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Starts a call's trace at `started` (wall clock, including the time
    /// the edge spent on the request before the call began).
    pub fn begin(&self, incoming: Carrier, tool: &str, started: SystemTime) -> CallTrace {
        let Some(x) = &self.export else {
            return CallTrace { incoming, call: None, execute: None };
        };
        let parent = TraceContextPropagator::new().extract(&incoming);
        let span = x
            .tracer
            .span_builder(format!("tools/call {tool}"))
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes([
                KeyValue::new("mcp.method.name", "tools/call"),
                KeyValue::new("gen_ai.operation.name", "execute_tool"),
                KeyValue::new("gen_ai.tool.name", tool.to_string()),
            ])
            .start_with_context(&x.tracer, &parent);
        CallTrace { incoming, call: Some(parent.with_span(span)), execute: None }
    }

    /// Opens the execute span: from here the upstream is handed its context.
    pub fn enter_execute(&self, trace: &mut CallTrace, upstream: &str) {
        let (Some(x), Some(call)) = (&self.export, &trace.call) else {
            return;
        };
        let span = x
            .tracer
            .span_builder("execute")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("tollgate.stage", "execute"),
                KeyValue::new("tollgate.upstream", upstream.to_string()),
            ])
            .start_with_context(&x.tracer, call);
        trace.execute = Some(call.with_span(span));
    }

    /// Closes the execute span: the upstream has answered.
    pub fn exit_execute(&self, trace: &CallTrace) {
        if let Some(cx) = &trace.execute {
            cx.span().end();
        }
    }

    /// Ends the call's spans: one per stage, laid out from the stage timings,
    /// under the call span, which ends now.
    pub fn end(&self, trace: &CallTrace, ended: &Ended<'_>) {
        let (Some(x), Some(call)) = (&self.export, &trace.call) else {
            return;
        };
        if !call.span().is_recording() {
            // Not sampled (the agent's flag): its context still went on, but no span is sent.
            return;
        }
        let mut at = ended.started;
        for &(stage, micros) in ended.stages {
            let end = at + Duration::from_micros(micros);
            match (&trace.execute, stage) {
                // Live, and ended by `exit_execute` when the upstream answered.
                (Some(_), "execute") => {}
                _ => {
                    let mut span = x
                        .tracer
                        .span_builder(stage)
                        .with_start_time(at)
                        .with_attributes([KeyValue::new("tollgate.stage", stage)])
                        .start_with_context(&x.tracer, call);
                    span.end_with_timestamp(end);
                }
            }
            at = end;
        }
        let span = call.span();
        let mut attributes = vec![
            KeyValue::new("tollgate.call_id", ended.call_id.to_string()),
            KeyValue::new("tollgate.decision", ended.decision),
        ];
        if let Some(s) = ended.status {
            attributes.push(KeyValue::new("tollgate.status", s));
        }
        if let Some(u) = ended.upstream {
            attributes.push(KeyValue::new("tollgate.upstream", u.to_string()));
        }
        if let Some(s) = ended.session {
            attributes.push(KeyValue::new("mcp.session.id", s.to_string()));
        }
        span.set_attributes(attributes);
        if matches!(ended.status, Some("failed" | "tool_error")) {
            span.set_status(Status::error(ended.status.unwrap_or_default()));
        }
        span.end_with_timestamp(at.max(SystemTime::now()));
    }

    /// Sends what is still queued. Blocks: run from a blocking thread.
    pub fn shutdown(&self) {
        if let Some(x) = &self.export
            && let Err(e) = x.provider.shutdown()
        {
            tracing::warn!("spans not exported at shutdown: {e}");
        }
    }
}

/// The OTLP exporter's HTTP client. The SDK exports from a thread of its own
/// with no tokio runtime; each request is run on tollgate's runtime.
#[derive(Debug)]
struct TokioHttp {
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let response = self
            .rt
            .spawn(async move {
                let response = client.execute(request).await?;
                let mut out = http::Response::builder().status(response.status());
                if let Some(h) = out.headers_mut() {
                    *h = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>(out.body(body))
            })
            .await??;
        Ok(response?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn meta_wins_over_the_header() {
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        let meta = serde_json::json!({"traceparent": TP, "tracestate": "a=1"});
        let c = Carrier::incoming(meta.as_object().unwrap(), Some(&headers(&[("traceparent", other)])));
        assert_eq!(c.traceparent.as_deref(), Some(TP));
        assert_eq!(c.tracestate.as_deref(), Some("a=1"));
        let c = Carrier::incoming(&serde_json::Map::new(), Some(&headers(&[("traceparent", other)])));
        assert_eq!(c.traceparent.as_deref(), Some(other));
    }

    #[test]
    fn invalid_context_is_dropped() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra\u{0}",
        ] {
            let meta = serde_json::json!({"traceparent": bad, "tracestate": "a=1"});
            let c = Carrier::incoming(meta.as_object().unwrap(), None);
            assert!(c.is_empty(), "{bad:?} accepted");
            assert_eq!(c.tracestate, None);
        }
        let meta = serde_json::json!({"traceparent": 7});
        assert!(Carrier::incoming(meta.as_object().unwrap(), None).is_empty());
    }

    #[test]
    fn without_export_the_agents_context_goes_on_unchanged() {
        let meta = serde_json::json!({"traceparent": TP, "tracestate": "vendor=x"});
        let incoming = Carrier::incoming(meta.as_object().unwrap(), None);
        let trace = Tracing::default().begin(incoming.clone(), "t", SystemTime::now());
        assert_eq!(trace.outgoing(), incoming);
        assert_eq!(trace.outgoing().traceparent.as_deref(), Some(TP));
        assert!(Tracing::default().begin(Carrier::default(), "t", SystemTime::now()).outgoing().is_empty());
    }
}
