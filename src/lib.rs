//! tollgate: an MCP-first gateway.
//!
//! Agents see one MCP server; behind it, every upstream MCP server's tools
//! as one catalog, with every call governed.
//!
//! Codemap, from the top down: a module uses only modules below it (a test,
//! `tests/it/layers.rs`, holds this list and every file's imports to that).
//!
//! - [`cli`]: the `tollgate` command: parses flags, loads config, runs a verb.
//! - [`app`]: wiring at the top: opens the store, builds the [`gateway`]'s
//!   handles and starts every background task.
//! - [`server`]: the edges: Streamable HTTP at `/mcp`, WebSocket at `/ws`,
//!   stdio, the OpenAI-compatible `/v1`, the admin API, approvals pages;
//!   request guards; list-change fan-out.
//! - [`pipeline`]: the governed call: stages that return a `Refusal` or move
//!   the call on, a `Permit` the execute stage requires, one `Outcome`.
//! - [`gateway`]: the shared state handed to every session: a bundle of handles.
//! - [`freshness`]: read-your-writes across replicas for keys and grants.
//! - [`admin`]: what admins change live: API grants (revisions, ETags) and
//!   tool pins, put in force in every process on the store.
//! - [`approval`]: the approval queue: pending actions, decisions, the
//!   change feed, signed webhooks, tasks.
//! - [`policy`]: grants: loading, hot reload, decisions, rate limits.
//! - [`budget`]: the ledger: holds before a call, settles after it.
//! - [`journal`]: the single writer that groups audit commits.
//! - [`llm`]: LLM providers behind the chat tool: wire formats, retries,
//!   fallbacks, token accounting.
//! - [`audit`]: audit records, redaction, verify.
//! - [`upstream`]: supervised connections to upstream MCP servers over
//!   stdio, Streamable HTTP, legacy HTTP+SSE and WebSocket; calls in flight.
//! - [`catalog`]: namespaced tools/prompts/resources, hashing, pins,
//!   quarantine, bounded schema compilation. Pure apart from compiling.
//! - [`trace`]: W3C trace context in and out; OTLP spans per stage.
//! - [`config`]: the files, parsed and checked into immutable values.
//! - [`identity`]: API keys and principals.
//! - [`scan`]: content scans (secrets, PII, injection, output policy, tool
//!   descriptions): pure detectors and the engine that applies settings.
//! - [`store`]: persistence (SQLite, PostgreSQL); SQL confined here.
//! - [`calendar`]: budget periods on the UTC calendar.
//! - [`ids`]: the domain's identifiers (call, hold, approval) as types.
//! - [`glob`]: `*`/`?` globs for tool names and URLs.
//! - [`metrics`]: Prometheus counters and histograms of calls and stages.
//! - [`money`]: integer micro-unit amounts.
//! - [`periodic`]: background work on a fixed period until shutdown.
//! - [`protocol`]: which MCP era a peer speaks.
//! - [`sync`]: locks that outlive a panic.
//! - [`ws`]: MCP over WebSocket (rmcp has no such transport).

// `unsafe` lives in one module, `store::sqlite::direct` (the audit append
// through SQLite's C API), which allows it for itself.
#![deny(unsafe_code)]

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
pub mod ids;
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
pub mod sync;
pub mod trace;
pub mod upstream;
pub mod ws;
