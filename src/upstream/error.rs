//! What can go wrong between tollgate and an upstream, as values the layers
//! above tell apart: a connection that could not be opened
//! ([`ConnectError`]) and a request that could not reach a connected (or
//! down) upstream ([`UpstreamError`]). Their texts are what agents, logs
//! and `/readyz` show, so none carries an upstream's URL.

use std::sync::Arc;
use std::time::Duration;

/// Why one connection attempt failed. The supervisor keeps its text as the
/// upstream's health until the next attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The manifest's transport settings cannot be used as written (a URL,
    /// a header, a command that is not there).
    #[error("{0}")]
    Settings(String),
    /// The process or the connection did not come up, or went away before
    /// answering.
    #[error("{0}")]
    Transport(String),
    /// It came up, but the MCP handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Connected, but its first listing failed.
    #[error("listing failed: {0}")]
    Listing(String),
    #[error("no answer within the connect timeout of {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// The server came up but refused the handshake (an era it does not speak).
    pub fn is_handshake(&self) -> bool {
        matches!(self, ConnectError::Handshake(_))
    }

    /// The same failure with its text passed through `f` (a scrubber).
    pub fn map_text(self, f: impl Fn(String) -> String) -> ConnectError {
        match self {
            ConnectError::Settings(t) => ConnectError::Settings(f(t)),
            ConnectError::Transport(t) => ConnectError::Transport(f(t)),
            ConnectError::Handshake(t) => ConnectError::Handshake(f(t)),
            ConnectError::Listing(t) => ConnectError::Listing(f(t)),
            ConnectError::Timeout(d) => ConnectError::Timeout(d),
        }
    }
}

/// Why a request did not reach an upstream or was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Down: its last connection attempt failed for `why`.
    #[error("upstream `{upstream}` is unavailable: {why}")]
    Down { upstream: Arc<str>, why: String },
    /// Not (or no longer) connected, with no failure on record yet.
    #[error("upstream `{0}` is not connected")]
    NotConnected(Arc<str>),
    /// It lacks the capability the request needs.
    #[error("upstream `{upstream}` does not support {what}")]
    Unsupported { upstream: Arc<str>, what: &'static str },
    /// It did not answer within `after`.
    #[error("upstream `{upstream}` did not answer the {what} within {after:?}")]
    TimedOut { upstream: Arc<str>, what: &'static str, after: Duration },
    /// Its `[agent_sessions] max` agents' own sessions are open.
    #[error(
        "upstream `{upstream}` already has its {cap} agent sessions open (its manifest's `[agent_sessions] max`); try again when one closes"
    )]
    Full { upstream: Arc<str>, cap: usize },
    /// The request failed on the way or the upstream refused it.
    #[error("upstream `{upstream}` {how}: {why}")]
    Failed { upstream: Arc<str>, how: &'static str, why: String },
}
