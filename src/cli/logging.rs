//! The process's log: to stderr (in stdio mode stdout carries only JSON-RPC),
//! plain text or JSON lines, filtered by `TOLLGATE_LOG` (or `RUST_LOG`).
//!
//! Nothing an agent sends or an upstream returns may reach the log, at any
//! level. Two nets make that hold whatever filter an operator sets:
//! - third-party crates are capped ([`caps`]): rmcp prints whole JSON-RPC
//!   messages at debug and trace, and the error it answers (which may echo
//!   a tool name or an argument) at warn, so it may log errors only; every
//!   other dependency logs at most warnings (hyper, h2 and tungstenite frame
//!   traces, reqwest's URLs). tollgate's own events never carry payloads.
//! - every line passes the secrets scan before it is written
//!   ([`RedactingWriter`]): a credential that slips into a message anyway
//!   (an upstream's stderr, an error text) is replaced.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One human-readable line per event.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the process's subscriber; `stdio` lowers the default level, since
/// the agent's client usually shows tollgate's stderr to its user.
pub fn init(stdio: bool, format: Format) {
    let default = if stdio { "warn" } else { "info" };
    let mut refused = None;
    let filter = ["TOLLGATE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            let v = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            EnvFilter::try_new(&v).map_err(|e| refused = Some(format!("{var}=`{v}` is not a log filter ({e})"))).ok()
        })
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = io::stderr().is_terminal();
    let layer = match format {
        Format::Plain => tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(RedactingWriter).boxed(),
        Format::Json => tracing_subscriber::fmt::layer().json().with_writer(RedactingWriter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(caps()).with(layer.with_filter(filter)).try_init();
    if let Some(why) = refused {
        tracing::warn!("{why}; logging at `{default}`");
    }
}

/// The most each crate may log, whatever the filter asks.
pub fn caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("tollgate", LevelFilter::TRACE)
        .with_target("rmcp", LevelFilter::ERROR)
}

/// Writes each formatted event to stderr with credential-shaped text replaced.
#[derive(Clone, Copy)]
pub struct RedactingWriter;

impl<'a> MakeWriter<'a> for RedactingWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One event's text, buffered and scanned when the event is complete (the
/// formatter writes an event in pieces; a secret may straddle two).
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let clean = crate::audit::redact::text(&text);
        let _ = io::stderr().lock().write_all(clean.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_party_crates_are_capped_whatever_the_filter() {
        let caps = caps();
        assert!(caps.would_enable("tollgate::pipeline", &tracing::Level::TRACE));
        assert!(!caps.would_enable("rmcp::service", &tracing::Level::WARN));
        assert!(caps.would_enable("rmcp::service", &tracing::Level::ERROR));
        assert!(!caps.would_enable("hyper::proto", &tracing::Level::DEBUG));
        assert!(caps.would_enable("sqlx::query", &tracing::Level::WARN));
    }
}
