//! Output policy on a tool result: which content types may reach the agent,
//! which links it may be shown, and how large the result may be. Applied
//! after the text scans, so sizes are of what the agent would really get.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::detector::pointer_segment;
use super::envelope::closing;
use super::finding::CallScan;
use super::settings::{OtherContent, OtherUrls, Output, Oversize};

static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)(?-u:\b)(?:https?|wss?|ftp)://[^\s<>"'`)\]]+"#).expect("URL pattern compiles"));

/// Applies `o` to `r` (a `CallToolResult` as JSON); findings go to `call`.
pub fn apply(r: &mut Value, o: &Output, call: &mut CallScan, direction: &'static str) {
    if let Some(allowed) = &o.content_types {
        content_types(r, allowed, o.other_content, call, direction);
    }
    if let Some(allowed) = &o.allowed_urls {
        links(r, allowed, o.other_urls, call, direction);
    }
    if let Some(max) = o.max_bytes {
        size(r, max, o.oversize, call, direction);
    }
}

/// Whether a block of `kind` and `mime` type is allowed by `allowed`.
pub fn type_allowed(allowed: &[String], kind: &str, mime: Option<&str>) -> bool {
    allowed.iter().any(|a| {
        a == kind
            || mime.is_some_and(|m| {
                let m = m.split(';').next().unwrap_or(m).trim().to_ascii_lowercase();
                let a = a.to_ascii_lowercase();
                match a.strip_suffix("/*") {
                    Some(major) => m.split_once('/').is_some_and(|(x, _)| x == major),
                    None => m == a,
                }
            })
    })
}

fn content_types(r: &mut Value, allowed: &[String], other: OtherContent, call: &mut CallScan, direction: &'static str) {
    let Some(content) = r.get_mut("content").and_then(Value::as_array_mut) else { return };
    for (i, block) in content.iter_mut().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        let mime = block
            .get("mimeType")
            .or_else(|| block.get("resource").and_then(|r| r.get("mimeType")))
            .and_then(Value::as_str)
            .map(str::to_string);
        if type_allowed(allowed, &kind, mime.as_deref()) {
            continue;
        }
        let what = mime.unwrap_or(kind);
        let at = format!("/content/{i}");
        match other {
            OtherContent::Block => call.note("output", "content_type", direction, &at, "block"),
            OtherContent::Drop => {
                call.note("output", "content_type", direction, &at, "drop");
                call.changed = true;
                *block = serde_json::json!({"type": "text", "text": format!("[content removed by tollgate: {what} is not an allowed content type]")});
            }
        }
    }
}

/// Whether `url` is on the allow-list. An entry without `://` is a host
/// (`*.acme.example` also matches `acme.example`); one with `://` is
/// `scheme://host-glob/path-glob`, the host glob matched against the host
/// alone and the path glob against what follows it (no path: any), so a `*`
/// can never reach from the host into the path or the user info.
pub fn url_allowed(allowed: &[String], url: &str) -> bool {
    let host = host_of(url);
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let path = rest.find(['/', '\\', '?', '#']).map_or("", |i| &rest[i..]);
    let host_matches = |pattern: &str| match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let suffix = suffix.to_ascii_lowercase();
            host == suffix || host.ends_with(&format!(".{suffix}"))
        }
        None => crate::glob::matches(&pattern.to_ascii_lowercase(), &host) && !host.is_empty(),
    };
    allowed.iter().any(|a| match a.split_once("://") {
        Some((s, pattern)) => {
            let (h, p) = pattern.find('/').map_or((pattern, ""), |i| (&pattern[..i], &pattern[i..]));
            s.eq_ignore_ascii_case(scheme) && host_matches(h) && (p.is_empty() || crate::glob::matches(p, path))
        }
        None => host_matches(a),
    })
}

/// The host of `url` as a browser would read it: a backslash ends the
/// authority like a slash, and user info is not the host.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| h).trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn links(r: &mut Value, allowed: &[String], other: OtherUrls, call: &mut CallScan, direction: &'static str) {
    let visit = |t: &mut String, at: &str, call: &mut CallScan| {
        let mut bad = Vec::new();
        for m in URL.find_iter(t) {
            let url = m.as_str().trim_end_matches(['.', ',', ';', ':', '!', '?']);
            if !url_allowed(allowed, url) {
                bad.push((m.start(), m.start() + url.len()));
            }
        }
        for _ in &bad {
            let action = match other {
                OtherUrls::Strip => "strip",
                OtherUrls::Block => "block",
                OtherUrls::Log => "log",
            };
            call.note("output", "url", direction, at, action);
        }
        if other == OtherUrls::Strip && !bad.is_empty() {
            call.changed = true;
            let mut out = String::with_capacity(t.len());
            let mut last = 0;
            for (s, e) in bad {
                out.push_str(&t[last..s]);
                let _ = std::fmt::Write::write_fmt(
                    &mut out,
                    format_args!("[link removed by tollgate: {} is not an allowed host]", host_of(&t[s..e])),
                );
                last = e;
            }
            out.push_str(&t[last..]);
            *t = out;
        }
    };
    if let Some(content) = r.get_mut("content").and_then(Value::as_array_mut) {
        for (i, block) in content.iter_mut().enumerate() {
            for key in ["text", "uri", "description"] {
                if let Some(Value::String(t)) = block.get_mut(key) {
                    visit(t, &format!("/content/{i}/{key}"), call);
                }
            }
            if let Some(Value::String(t)) = block.get_mut("resource").and_then(|r| r.get_mut("text")) {
                visit(t, &format!("/content/{i}/resource/text"), call);
            }
        }
    }
    if let Some(s) = r.get_mut("structuredContent") {
        strings(s, "/structuredContent", &mut |t, at| visit(t, at, call));
    }
}

fn strings(v: &mut Value, at: &str, f: &mut dyn FnMut(&mut String, &str)) {
    match v {
        Value::String(t) => f(t, at),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strings(item, &format!("{at}/{i}"), f);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                strings(item, &format!("{at}/{}", pointer_segment(k)), f);
            }
        }
        _ => {}
    }
}

/// Serialized size of `v` in bytes, without building the bytes.
pub fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).map_or(usize::MAX, |()| c.0)
}

fn size(r: &mut Value, max: usize, oversize: Oversize, call: &mut CallScan, direction: &'static str) {
    let total = json_size(r);
    if total <= max {
        return;
    }
    if oversize == Oversize::Refuse {
        call.note("output", "size", direction, "", "block");
        return;
    }
    call.note("output", "size", direction, "", "truncate");
    call.changed = true;
    let marker = format!("\n[truncated by tollgate: the result was {total} bytes, the limit is {max}]");
    // Structured content cannot be cut and stay valid: it goes first.
    if let Some(obj) = r.as_object_mut() {
        obj.remove("structuredContent");
    }
    // Cut text from the end until the whole fits with the marker; removing
    // n bytes of text removes at least n bytes of JSON.
    // (Room for an envelope's closing line, should the cut text have one.)
    let mut over = json_size(r).saturating_sub(max) + marker.len() + 64;
    if let Some(content) = r.get_mut("content").and_then(Value::as_array_mut) {
        while over > 0 && !content.is_empty() {
            let last = content.len() - 1;
            let block_size = json_size(&content[last]);
            let text_len = content[last].get("text").and_then(Value::as_str).map_or(0, str::len);
            if text_len > over && block_size - text_len < max {
                if let Some(Value::String(t)) = content[last].get_mut("text") {
                    let mut cut = t.len() - over;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t.truncate(cut);
                }
                over = 0;
            } else {
                content.pop();
                over = over.saturating_sub(block_size + 1);
            }
        }
        match content.last_mut().and_then(|b| b.get_mut("text")) {
            Some(Value::String(t)) => {
                t.push_str(&marker);
                // A cut envelope still ends with its own closing line.
                if let Some(nonce) = t.strip_prefix("[untrusted content ").and_then(|r| r.split(' ').next()) {
                    let close = closing(nonce);
                    if !t.ends_with(&close) {
                        t.push('\n');
                        t.push_str(&close);
                    }
                }
            }
            _ => content.push(serde_json::json!({"type": "text", "text": marker.trim_start()})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::settings::{Place, Settings, compile};
    use serde_json::json;

    fn out(v: Value) -> Output {
        Settings::resolve(&[Some(&compile(&json!({ "output": v }), Place::Policy).expect("layer"))]).output
    }

    #[test]
    fn oversize_results_are_truncated_with_a_marker_or_refused() {
        let big = "x".repeat(10_000);
        let mut r = json!({"content": [{"type": "text", "text": big}], "structuredContent": {"a": 1}});
        let mut call = CallScan::new("t");
        apply(&mut r, &out(json!({"max_bytes": 1000})), &mut call, "result");
        assert!(json_size(&r) <= 1000, "{}", json_size(&r));
        let t = r["content"][0]["text"].as_str().expect("text");
        assert!(t.starts_with("xxx") && t.ends_with("the limit is 1000]"), "{t}");
        assert!(r.get("structuredContent").is_none());
        assert_eq!(call.findings[0].action, "truncate");

        let mut r = json!({"content": [{"type": "text", "text": "x".repeat(10_000)}]});
        let mut call = CallScan::new("t");
        apply(&mut r, &out(json!({"max_bytes": 1000, "oversize": "refuse"})), &mut call, "result");
        assert!(call.blocked("result"));

        let mut r = json!({"content": [{"type": "text", "text": "small"}]});
        let mut call = CallScan::new("t");
        apply(&mut r, &out(json!({"max_bytes": 1000})), &mut call, "result");
        assert!(call.findings.is_empty());
    }

    #[test]
    fn content_types_by_block_type_or_mime() {
        let allowed = vec!["text".to_string(), "image/png".to_string(), "audio/*".to_string()];
        let table = [
            ("text", None, true),
            ("image", Some("image/png"), true),
            ("image", Some("image/svg+xml"), false),
            ("audio", Some("audio/wav"), true),
            ("resource", Some("application/pdf"), false),
        ];
        for (kind, mime, ok) in table {
            assert_eq!(type_allowed(&allowed, kind, mime), ok, "{kind} {mime:?}");
        }
        let mut r = json!({"content": [{"type": "image", "data": "AAAA", "mimeType": "image/svg+xml"}]});
        let mut call = CallScan::new("t");
        apply(&mut r, &out(json!({"content_types": ["text", "image/png"]})), &mut call, "result");
        assert_eq!(r["content"][0]["type"], "text");
        assert!(r["content"][0]["text"].as_str().is_some_and(|t| t.contains("image/svg+xml is not an allowed")));
    }

    #[test]
    fn links_off_the_allow_list_are_stripped() {
        let allowed = vec![
            "*.acme.example".to_string(),
            "https://docs.other.example/public/*".to_string(),
            "https://*.acme.example/*".to_string(),
        ];
        for (url, ok) in [
            ("https://acme.example/x", true),
            ("https://api.acme.example:8443/x?y=1", true),
            ("https://evilacme.example/", false),
            ("https://acme.example.evil.test/", false),
            ("https://docs.other.example/public/a", true),
            ("https://docs.other.example/private/a", false),
            ("https://user@evil.test/", false),
            ("https://evil.test\\@acme.example/", false),
            ("https://evil.test/x.acme.example/", false),
            ("https://docs.other.example.evil.test/public/a", false),
        ] {
            assert_eq!(url_allowed(&allowed, url), ok, "{url}");
        }
        let mut r = json!({"content": [{"type": "text", "text": "see https://acme.example/a and [x](https://evil.test/p?q=1)."}]});
        let mut call = CallScan::new("t");
        apply(&mut r, &out(json!({"allowed_urls": ["*.acme.example"]})), &mut call, "result");
        assert_eq!(
            r["content"][0]["text"],
            "see https://acme.example/a and [x]([link removed by tollgate: evil.test is not an allowed host])."
        );
        assert_eq!(call.findings[0].kind, "url");
    }
}
