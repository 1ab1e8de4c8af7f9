//! Provider wire formats: request bodies, replies and stream events, as
//! plain functions over JSON (the HTTP is in `client`).

pub mod anthropic;
pub mod openai;

use super::price::Usage;

/// A whole (non-streamed) reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// The model the provider says answered.
    pub model: Option<String>,
}

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Finish(String),
    /// Counts reported so far (each side when known).
    Usage {
        input: Option<i64>,
        output: Option<i64>,
    },
    Done,
    /// The provider reported an error inside the stream.
    Error(String),
}

fn count(v: Option<&serde_json::Value>) -> Option<i64> {
    v.and_then(serde_json::Value::as_i64).filter(|n| *n >= 0)
}
