//! tollgate: an MCP-first gateway.
//!
//! Agents see one MCP server; behind it, every upstream MCP server's tools
//! as one catalog, with every call governed.
//!
//! Codemap (dependencies point down this list, never up):
//!
//! - [`cli`]: the `tollgate` command: parses flags, loads config, runs a verb.
//! - [`server`]: the agent-facing edge: Streamable HTTP at `/mcp`, WebSocket
//!   at `/ws`, stdio; request guards; list-change fan-out. Speaks MCP only.
//! - [`pipeline`]: the governed call, one straight-line function of stages.
//! - [`gateway`]: the shared state handed to every session.
//! - [`admin`]: what admins change live: API grants (revisions, ETags) and
//!   tool pins, put in force in every process on the store.
//! - [`approval`]: the approval queue: pending actions, decisions, the
//!   change feed, signed webhooks, tasks.
//! - [`audit`]: audit records, redaction, the group-commit writer, verify.
//! - [`policy`]: grants: loading, hot reload, decisions, rate limits.
//! - [`identity`]: API keys and principals.
//! - [`catalog`]: namespaced tools/prompts/resources, hashing, pins,
//!   quarantine, bounded schema compilation. Pure apart from compiling.
//! - [`upstream`]: supervised connections to upstream MCP servers over
//!   stdio, Streamable HTTP, legacy HTTP+SSE and WebSocket.
//! - [`ws`]: MCP over WebSocket (rmcp has no such transport).
//! - [`config`]: the files, parsed and checked into immutable values.
//! - [`money`]: integer micro-unit amounts.
//! - [`metrics`]: Prometheus counters and histograms of calls and stages.
//! - [`trace`]: W3C trace context in and out; OTLP spans per stage.
//! - [`periodic`]: background work on a fixed period until shutdown.
//! - [`scan`]: content scans (secrets, PII, injection, output policy, tool
//!   descriptions): pure detectors and the engine that applies settings.
//! - [`glob`]: `*`/`?` globs for tool names and URLs.
//! - [`store`]: persistence (SQLite now), SQL confined to backends.
//! - [`protocol`]: which MCP era a peer speaks.

pub mod admin;
pub mod app;
pub mod approval;
pub mod audit;
pub mod budget;
pub mod calendar;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod freshness;
pub mod gateway;
pub mod glob;
pub mod identity;
pub mod journal;
pub mod llm;
pub mod metrics;
pub mod money;
pub mod periodic;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod scan;
pub mod server;
pub mod store;
pub mod trace;
pub mod upstream;
pub mod ws;
