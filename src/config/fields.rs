//! Checks of single values that several config files share.

use std::time::Duration;

use toml::Spanned;

use super::duration;
use super::error::Sink;

/// An absolute http:// or https:// URL.
pub fn is_http_url(text: &str) -> bool {
    (text.starts_with("http://") || text.starts_with("https://")) && reqwest::Url::parse(text).is_ok()
}

/// A duration above zero, or an error at its field.
pub fn opt_duration(v: &Option<Spanned<String>>, field: &str, sink: &mut Sink<'_>) -> Option<Duration> {
    let v = v.as_ref()?;
    match duration::parse(v.get_ref()) {
        Ok(d) if d.is_zero() => {
            sink.at(Some(v.span()), field, "must be greater than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            sink.at(Some(v.span()), field, e);
            None
        }
    }
}

/// An upstream's (or provider's) name: 1 to 64 letters, digits, `_` or `-`.
pub fn valid_upstream_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The character set MCP allows in tool names.
pub fn valid_tool_name_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
