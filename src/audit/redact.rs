//! Removing secrets before anything is hashed, stored or logged.
//!
//! Two nets: values under keys that name secrets (`password`, `token`,
//! `api_key`, ...) or under the manifest's `redact` fields are replaced
//! whole; in every other string, whatever the secrets scan finds
//! (`scan::secrets`: provider API keys, cloud keys, JWTs, private keys,
//! bearer tokens, credentials in URLs, tollgate's own keys) is replaced. Redaction happens before the
//! audit hash is computed, so the chain never commits to a secret.

use serde_json::Value;
use std::borrow::Cow;

pub const MARK: &str = "[REDACTED]";

/// Key names whose values are secrets whatever they look like.
fn secret_key(name: &str) -> bool {
    crate::scan::secrets::secret_name(name)
}

/// `text` with every credential-shaped substring replaced.
pub fn text(text: &str) -> Cow<'_, str> {
    crate::scan::secrets::redact(text, MARK)
}

/// A copy of `v` with secrets removed. `fields` are the manifest's `redact`
/// entries: property names (at any depth) or JSON pointers (`/a/b`).
pub fn value(v: &Value, fields: &[String]) -> Value {
    let mut out = v.clone();
    for f in fields.iter().filter(|f| f.starts_with('/')) {
        if let Some(slot) = out.pointer_mut(f) {
            *slot = Value::from(MARK);
        }
    }
    let names: Vec<&str> = fields.iter().filter(|f| !f.starts_with('/')).map(String::as_str).collect();
    walk(&mut out, &names);
    out
}

/// The string values `value` would replace whole (under secret-named keys
/// or the manifest's fields), so they can be scrubbed from free text such
/// as validation messages that quote them.
pub fn whole_values(v: &Value, fields: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.starts_with('/')) {
        if let Some(x) = v.pointer(f) {
            strings(x, &mut out);
        }
    }
    let names: Vec<&str> = fields.iter().filter(|f| !f.starts_with('/')).map(String::as_str).collect();
    collect(v, &names, &mut out);
    out.retain(|s| s.len() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn collect(v: &Value, names: &[&str], out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect(i, names, out)),
        Value::Object(map) => {
            for (k, child) in map {
                if names.contains(&k.as_str()) || secret_key(k) {
                    strings(child, out);
                } else {
                    collect(child, names, out);
                }
            }
        }
        _ => {}
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.values().for_each(|c| strings(c, out)),
        _ => {}
    }
}

/// `text` with credential shapes and each of `values` replaced.
pub fn scrub(text_in: &str, values: &[String]) -> String {
    let mut t = text(text_in).into_owned();
    for v in values {
        if t.contains(v.as_str()) {
            t = t.replace(v.as_str(), MARK);
        }
    }
    t
}

fn walk(v: &mut Value, names: &[&str]) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(r) = text(s) {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(i, names)),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if names.contains(&k.as_str())
                    || (secret_key(k) && !matches!(child, Value::Object(_) | Value::Array(_)))
                {
                    if !child.is_null() {
                        *child = Value::from(MARK);
                    }
                } else {
                    walk(child, names);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_shapes_are_removed_from_text() {
        for secret in [
            "tg_0123456789abcdef0123456789abcdef0123456789abcdef",
            "sk-proj-abcdefghijklmnop1234",
            "sk_live_abcdefghij1234",
            "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "AKIAABCDEFGHIJKLMNOP",
            "xoxb-1234567890-abcdefghij",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlaGVyZQ",
            "Bearer abcdefghijklmnopqrstuvwxyz",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----",
        ] {
            let out = text(&format!("before {secret} after")).into_owned();
            assert_eq!(out, format!("before {MARK} after"), "{secret}");
        }
        assert_eq!(text("postgres://user:hunter2@db/x"), format!("postgres://{MARK}@db/x"));
        assert_eq!(text("nothing to see"), "nothing to see");
    }

    #[test]
    fn secret_keys_manifest_fields_and_pointers_are_replaced_whole() {
        let v = json!({
            "password": "hunter2",
            "db": {"api_key": "x1", "host": "h", "note": "sk-abcdefghijklmnopqrstu"},
            "body": "keep me",
            "ssn": "123-45-6789",
            "list": [{"token": "t"}],
            "deep": {"card": "4111"},
            "tokens": 5,
            "author": "ann"
        });
        let out = value(&v, &["ssn".into(), "/deep/card".into()]);
        assert_eq!(
            out,
            json!({
                "password": MARK,
                "db": {"api_key": MARK, "host": "h", "note": MARK},
                "body": "keep me",
                "ssn": MARK,
                "list": [{"token": MARK}],
                "deep": {"card": MARK},
                "tokens": 5,
                "author": "ann"
            })
        );
    }
}
