//! The agent-facing edge: tollgate as an MCP server over Streamable HTTP,
//! WebSocket and stdio. Only this module speaks the agent's wire protocol.

pub mod admin;
pub mod approvals;
pub mod fanout;
pub mod handler;
pub mod http;
pub mod stdio;
pub mod strict_json;
