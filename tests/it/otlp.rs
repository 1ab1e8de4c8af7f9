//! An OTLP/HTTP trace receiver: accepts `POST /v1/traces` in both encodings
//! (protobuf, decoded with the OpenTelemetry protocol's own generated types,
//! and JSON) and hands every span received to the test.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

/// One span as received, ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's enum: 2 server, 3 client.
    pub kind: i64,
    pub start_nanos: u64,
    pub end_nanos: u64,
    /// String-valued attributes.
    pub attributes: BTreeMap<String, String>,
    pub service_name: String,
    /// The request's content type.
    pub encoding: String,
}

pub struct Receiver {
    pub url: String,
    spans: mpsc::UnboundedReceiver<Span>,
    pub received: Vec<Span>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (tx, spans) = mpsc::unbounded_channel();
        let app = Router::new().route("/v1/traces", post(traces)).with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans, received: Vec::new() }
    }

    /// Receives spans until `done` holds for what has arrived (at most `within`).
    pub async fn until(&mut self, within: Duration, done: impl Fn(&[Span]) -> bool) -> &[Span] {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.received) {
            match tokio::time::timeout_at(deadline, self.spans.recv()).await {
                Ok(Some(s)) => self.received.push(s),
                _ => panic!("spans did not arrive in {within:?}; received: {:#?}", self.received),
            }
        }
        &self.received
    }
}

async fn traces(State(tx): State<mpsc::UnboundedSender<Span>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let spans = if ct.starts_with("application/x-protobuf") {
        match ExportTraceServiceRequest::decode(body) {
            Ok(r) => from_proto(r, &ct),
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    } else if ct.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => from_json(&v, &ct),
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    } else {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    };
    for s in spans {
        let _ = tx.send(s);
    }
    StatusCode::OK
}

fn from_proto(r: ExportTraceServiceRequest, ct: &str) -> Vec<Span> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let mut out = Vec::new();
    for rs in r.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Any::StringValue(s) => s.clone(),
                _ => String::new(),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                        Any::StringValue(v) => Some((a.key.clone(), v.clone())),
                        _ => None,
                    })
                    .collect();
                out.push(Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    kind: i64::from(s.kind),
                    start_nanos: s.start_time_unix_nano,
                    end_nanos: s.end_time_unix_nano,
                    attributes,
                    service_name: service.clone(),
                    encoding: ct.to_string(),
                });
            }
        }
    }
    out
}

fn from_json(v: &Value, ct: &str) -> Vec<Span> {
    let nanos = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()).unwrap_or(0);
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let attributes = s["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| Some((a["key"].as_str()?.to_string(), a["value"]["stringValue"].as_str()?.into())))
                    .collect();
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                out.push(Span {
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: text("name"),
                    kind: s["kind"].as_i64().unwrap_or(0),
                    start_nanos: nanos(&s["startTimeUnixNano"]),
                    end_nanos: nanos(&s["endTimeUnixNano"]),
                    attributes,
                    service_name: service.clone(),
                    encoding: ct.to_string(),
                });
            }
        }
    }
    out
}
