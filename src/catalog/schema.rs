//! Compiling untrusted JSON Schemas within bounds of size, depth and time.
//!
//! An upstream's schema is input from a server we do not control. A schema
//! that is too large, too deep, or does not compile in time quarantines the
//! one tool it belongs to; it never stalls or crashes the gateway. `pattern`
//! uses the linear-time `regex` engine with size limits, so a hostile pattern
//! cannot cause catastrophic backtracking at call time. Remote `$ref`s are
//! never fetched (jsonschema is built without its resolvers).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

/// Bounds on one schema.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
    pub compile_time: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024, max_depth: 48, max_nodes: 20_000, compile_time: Duration::from_secs(2) }
    }
}

/// Starts the message of a compilation that ran out of time: a transient
/// outcome (the machine may have been busy), never cached.
pub const TIMED_OUT: &str = "input schema did not compile within";

/// Compiles `schema`, or says why it will not.
pub fn compile(schema: &Value, bounds: Bounds) -> Result<Arc<Validator>, String> {
    let size = serde_json::to_vec(schema).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > bounds.max_bytes {
        return Err(format!("input schema is {size} bytes, more than the {} allowed", bounds.max_bytes));
    }
    let mut nodes = 0usize;
    let depth = measure(schema, 1, &mut nodes);
    if depth > bounds.max_depth {
        return Err(format!("input schema nests {depth} levels, more than the {} allowed", bounds.max_depth));
    }
    if nodes > bounds.max_nodes {
        return Err(format!("input schema has {nodes} nodes, more than the {} allowed", bounds.max_nodes));
    }
    // Compilation runs on its own thread so a pathological schema can be
    // abandoned after the time bound without blocking the caller.
    let (tx, rx) = mpsc::channel();
    let owned = schema.clone();
    std::thread::Builder::new()
        .name("schema-compile".into())
        .spawn(move || {
            let result = jsonschema::options()
                .with_pattern_options(PatternOptions::regex().size_limit(1 << 20).dfa_size_limit(1 << 20))
                .should_validate_formats(false)
                .build(&owned)
                .map(Arc::new)
                .map_err(|e| format!("input schema does not compile: {e}"));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start schema compilation: {e}"))?;
    match rx.recv_timeout(bounds.compile_time) {
        Ok(result) => result,
        Err(_) => Err(format!("{TIMED_OUT} {:?}", bounds.compile_time)),
    }
}

fn measure(v: &Value, depth: usize, nodes: &mut usize) -> usize {
    *nodes += 1;
    match v {
        Value::Object(map) => map.values().map(|c| measure(c, depth + 1, nodes)).max().unwrap_or(depth),
        Value::Array(items) => items.iter().map(|c| measure(c, depth + 1, nodes)).max().unwrap_or(depth),
        _ => depth,
    }
}

/// Every violation of `validator` by `instance`, as `pointer: message`.
/// At most this many violations are reported: enough for a model to correct
/// itself, and a bound on the work a hostile argument can cause.
pub const MAX_VIOLATIONS: usize = 50;

/// Every violation of `validator` by `instance` (at most [`MAX_VIOLATIONS`]), as `pointer: message`.
pub fn violations(validator: &Validator, instance: &Value) -> Vec<String> {
    // The common case, valid arguments, takes the cheaper check.
    if validator.is_valid(instance) {
        return Vec::new();
    }
    validator
        .iter_errors(instance)
        .take(MAX_VIOLATIONS)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let pointer = if pointer.is_empty() { "/".to_string() } else { pointer };
            format!("{pointer}: {e}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_an_ordinary_schema_and_lists_violations_with_pointers() {
        let v = compile(
            &json!({"type":"object","properties":{"n":{"type":"integer"}},"required":["n","m"]}),
            Bounds::default(),
        )
        .unwrap();
        let errs = violations(&v, &json!({"n":"x"}));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("/n:")));
        assert!(errs.iter().any(|e| e.starts_with("/:") && e.contains("\"m\"")));
    }

    #[test]
    fn refuses_deep_and_large_schemas() {
        let mut deep = json!({"type":"string"});
        for _ in 0..100 {
            deep = json!({"items": deep});
        }
        assert!(compile(&deep, Bounds::default()).unwrap_err().contains("nests"));
        let wide = json!({"allOf": vec![json!({"type":"object"}); 30_000]});
        assert!(compile(&wide, Bounds::default()).is_err());
    }

    #[test]
    fn recursive_refs_compile_without_hanging() {
        let s = json!({"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"});
        let v = compile(&s, Bounds::default()).unwrap();
        assert!(violations(&v, &json!({"next":{"next":{}}})).is_empty());
    }

    #[test]
    fn catastrophic_pattern_is_linear_time() {
        let v = compile(&json!({"type":"string","pattern":"^(a+)+$"}), Bounds::default()).unwrap();
        let hostile = format!("{}!", "a".repeat(50_000));
        assert_eq!(violations(&v, &json!(hostile)).len(), 1);
    }

    #[test]
    fn remote_refs_are_not_fetched() {
        let r = compile(&json!({"$ref":"http://127.0.0.1:9/schema.json"}), Bounds::default());
        assert!(r.is_err());
    }
}
