//! The agent-facing edge: tollgate as an MCP server over Streamable HTTP,
//! WebSocket and stdio, plus the OpenAI-compatible `/v1/chat/completions`.
//! Only this module speaks the agent's wire protocols.

pub mod admin;
pub mod approvals;
pub mod fanout;
pub mod handler;
pub mod http;
mod malformed;
pub mod metrics;
pub mod openai;
pub mod session_cap;
pub mod stdio;
pub mod strict_json;
