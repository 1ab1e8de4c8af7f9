//! Strict checking of one JSON-RPC body before anything interprets it:
//! bounded nesting, no duplicate object keys, valid UTF-8, one message.
//!
//! Duplicate keys matter because two parsers may pick different values
//! (a classic smuggling vector); depth matters because recursive parsers
//! can be driven into stack exhaustion.

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

/// Checks `body`; `Ok` means it is a single JSON object within bounds.
pub fn check(body: &[u8], max_depth: usize) -> Result<(), Rejection> {
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
    let result = Check { depth: 0, max: max_depth }.deserialize(&mut de).and_then(|()| de.end());
    result.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Rejection::Invalid(e.to_string()),
        _ => Rejection::Parse(e.to_string()),
    })
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
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.deeper()?)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        let inner = self.deeper::<A::Error>()?;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value_seed(Check { depth: inner.depth, max: inner.max })?;
        }
        Ok(())
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
}
