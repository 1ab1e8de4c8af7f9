//! Strict checking of one JSON body before anything interprets it:
//! bounded nesting, no duplicate object keys, valid UTF-8, one message; and,
//! for JSON-RPC bodies ([`message`]), the JSON-RPC 2.0 envelope as MCP uses it.
//!
//! Duplicate keys matter because two parsers may pick different values
//! (a classic smuggling vector); depth matters because recursive parsers
//! can be driven into stack exhaustion. The envelope is checked here, in the
//! same pass, because rmcp answers a JSON object it cannot read as a message
//! with HTTP 415 and a plain-text body, not a JSON-RPC error.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON (or not UTF-8): JSON-RPC parse error.
    Parse(String),
    /// JSON, but not a message tollgate accepts: JSON-RPC invalid request.
    Invalid(String),
}

/// What the edge needs to know of a JSON-RPC message it let through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The request's or notification's method; `None` for a response.
    pub method: Option<String>,
}

/// Checks `body`; `Ok` means it is a single JSON object within bounds.
pub fn check(body: &[u8], max_depth: usize) -> Result<(), Rejection> {
    scan(body, max_depth).map(|_| ())
}

/// Checks `body` as [`check`] does, then as one JSON-RPC 2.0 message: a
/// request (string or number `id`, `method`, object `params`), a notification
/// (no `id`) or a response (`id` with exactly one of `result` and `error`).
pub fn message(body: &[u8], max_depth: usize) -> Result<Message, Rejection> {
    let top = scan(body, max_depth)?;
    top.envelope().map_err(|m| Rejection::Invalid(m.to_string()))
}

fn scan(body: &[u8], max_depth: usize) -> Result<Top, Rejection> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(Rejection::Parse("empty body".into())),
        Some(b'[') => {
            return Err(Rejection::Invalid("batch requests are not supported: send one message per request".into()));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(Rejection::Invalid("a JSON-RPC message must be a JSON object".into()));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    // serde_json's own recursion limit (128) stays on as a backstop.
    let result = TopSeed { max: max_depth }.deserialize(&mut de).and_then(|top| de.end().map(|()| top));
    result.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Rejection::Invalid(e.to_string()),
        _ => Rejection::Parse(e.to_string()),
    })
}

/// The JSON type of a value, without its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// The top-level members a JSON-RPC envelope is judged by.
#[derive(Debug, Default)]
struct Top {
    jsonrpc: Option<Result<String, Kind>>,
    method: Option<Result<String, Kind>>,
    id: Option<Kind>,
    params: Option<Kind>,
    result: Option<Kind>,
    error: Option<Kind>,
}

impl Top {
    fn envelope(self) -> Result<Message, &'static str> {
        match &self.jsonrpc {
            Some(Ok(v)) if v == "2.0" => {}
            Some(_) => return Err("`jsonrpc` must be \"2.0\""),
            None => return Err("not a JSON-RPC 2.0 message: `jsonrpc` is missing"),
        }
        let id_ok = |k: Kind| matches!(k, Kind::String | Kind::Number);
        match self.method {
            Some(Err(_)) => Err("`method` must be a string"),
            Some(Ok(method)) => {
                if self.id.is_some_and(|k| !id_ok(k)) {
                    return Err("`id` must be a string or a number");
                }
                if self.params.is_some_and(|k| k != Kind::Object) {
                    return Err("`params` must be an object");
                }
                if self.result.is_some() || self.error.is_some() {
                    return Err("a request cannot carry `result` or `error`");
                }
                Ok(Message { method: Some(method) })
            }
            None => match (self.id, self.result, self.error) {
                (None, _, _) => Err("not a JSON-RPC message: no `method` and no `id`"),
                (Some(_), Some(_), Some(_)) => Err("a response carries `result` or `error`, not both"),
                (Some(_), None, None) => Err("a response needs `result` or `error`"),
                (Some(k), Some(_), None) if !id_ok(k) => Err("`id` must be a string or a number"),
                (Some(k), None, Some(_)) if !(id_ok(k) || k == Kind::Null) => {
                    Err("`id` must be a string, a number or null")
                }
                (Some(_), _, Some(e)) if e != Kind::Object => Err("`error` must be an object"),
                _ if self.params.is_some() => Err("a response cannot carry `params`"),
                _ => Ok(Message { method: None }),
            },
        }
    }
}

struct TopSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Top;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut keys = HashSet::new();
        let inner = Check { depth: 0, max: self.max }.deeper::<A::Error>()?;
        let mut top = Top::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = Check { depth: inner.depth, max: inner.max };
            match key.as_ref() {
                "jsonrpc" => top.jsonrpc = Some(map.next_value_seed(Text(value))?),
                "method" => top.method = Some(map.next_value_seed(Text(value))?),
                "id" => top.id = Some(map.next_value_seed(value)?),
                "params" => top.params = Some(map.next_value_seed(value)?),
                "result" => top.result = Some(map.next_value_seed(value)?),
                "error" => top.error = Some(map.next_value_seed(value)?),
                _ => {
                    map.next_value_seed(value)?;
                }
            }
        }
        Ok(top)
    }
}

/// A member whose text matters (`jsonrpc`, `method`): the string, or the kind
/// of whatever else it was.
struct Text(Check);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Result<String, Kind>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Result<String, Kind>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Ok(v.to_string()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(Kind::Bool))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(Kind::Number))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(Kind::Number))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(Kind::Number))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Kind::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(Err)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(Err)
    }
}

struct Check {
    depth: usize,
    max: usize,
}

impl Check {
    fn deeper<E: serde::de::Error>(&self) -> Result<Check, E> {
        if self.depth + 1 > self.max {
            return Err(E::custom(format!("JSON nests deeper than {} levels", self.max)));
        }
        Ok(Check { depth: self.depth + 1, max: self.max })
    }
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element_seed(self.deeper()?)?.is_some() {}
        Ok(Kind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut keys = HashSet::new();
        let inner = self.deeper::<A::Error>()?;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value_seed(Check { depth: inner.depth, max: inner.max })?;
        }
        Ok(Kind::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_ordinary_message() {
        assert_eq!(
            check(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":[1,{"b":null}]}}"#, 64),
            Ok(())
        );
    }

    #[test]
    fn refuses_batches_and_non_objects() {
        assert!(matches!(check(b"[{}]", 64), Err(Rejection::Invalid(m)) if m.contains("batch")));
        assert!(matches!(check(b"42", 64), Err(Rejection::Invalid(_))));
        assert!(matches!(check(b"  ", 64), Err(Rejection::Parse(_))));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert!(
            matches!(check(br#"{"id":1,"id":2}"#, 64), Err(Rejection::Invalid(m)) if m.contains("duplicate key `id`"))
        );
        assert!(matches!(check(br#"{"p":{"a":{"x":1,"x":1}}}"#, 64), Err(Rejection::Invalid(_))));
        assert_eq!(check(br#"{"a":{"x":1},"b":{"x":1}}"#, 64), Ok(()));
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(check(deep.as_bytes(), 64), Err(Rejection::Invalid(m)) if m.contains("deeper")));
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(10), "]".repeat(10));
        assert_eq!(check(ok.as_bytes(), 64), Ok(()));
    }

    #[test]
    fn refuses_malformed_json_and_invalid_utf8() {
        assert!(matches!(check(b"{\"a\":", 64), Err(Rejection::Parse(_))));
        assert!(matches!(check(b"{\"a\":\"\xff\xfe\"}", 64), Err(Rejection::Parse(_))));
        assert!(matches!(check(b"{} trailing", 64), Err(Rejection::Parse(_))));
    }
    #[test]
    fn accepts_requests_notifications_and_responses() {
        let m = message(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#, 64);
        assert_eq!(m, Ok(Message { method: Some("tools/call".into()) }));
        let n = message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, 64);
        assert_eq!(n, Ok(Message { method: Some("notifications/initialized".into()) }));
        assert_eq!(message(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#, 64), Ok(Message { method: None }));
        let e = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m"}}"#;
        assert_eq!(message(e, 64), Ok(Message { method: None }));
    }

    #[test]
    fn refuses_json_that_is_not_json_rpc() {
        for (body, says) in [
            (&br#"{"hello":"world"}"#[..], "`jsonrpc` is missing"),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, "\"2.0\""),
            (br#"{"jsonrpc":2,"id":1,"method":"ping"}"#, "\"2.0\""),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#, "`params` must be an object"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#, "`params` must be an object"),
            (br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, "`id` must be a string or a number"),
            (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, "`id` must be a string or a number"),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, "`method` must be a string"),
            (br#"{"jsonrpc":"2.0","id":1}"#, "needs `result` or `error`"),
            (br#"{"jsonrpc":"2.0"}"#, "no `method` and no `id`"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, "not both"),
            (br#"{"jsonrpc":"2.0","id":1,"error":"x"}"#, "`error` must be an object"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#, "cannot carry `result`"),
        ] {
            match message(body, 64) {
                Err(Rejection::Invalid(m)) => assert!(m.contains(says), "{}: {m}", String::from_utf8_lossy(body)),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn the_generic_check_accepts_any_object() {
        assert_eq!(check(br#"{"hello":"world"}"#, 64), Ok(()));
    }
}
