//! Values that may carry secrets: templates with `${env:NAME}` references.
//!
//! Secrets are never written inline in a file: a header or variable whose
//! name says it carries a credential must take its value from a reference.
//! The resolved value lives in [`Secret`], whose `Debug` never prints it.

use std::collections::BTreeMap;
use std::fmt;

use toml::Spanned;

use super::error::Sink;

/// A resolved value that must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A value with no reference to resolve (it is treated as secret all the same).
    pub fn plain(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resolves every `${env:NAME}` in `template` with `lookup`.
pub fn resolve(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated `${` reference".to_string())?;
        let reference = &after[..end];
        let name = reference
            .strip_prefix("env:")
            .ok_or_else(|| format!("unknown reference `${{{reference}}}`: only `${{env:NAME}}` is supported"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("`{name}` is not an environment variable name"));
        }
        let value = lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Secret(out))
}

/// Resolves a table of named values (headers, environment): a name that
/// says it carries a credential must take its value from a reference.
/// Errors name the field as `{prefix}.{name}`.
pub fn resolve_pairs(
    map: Option<BTreeMap<String, Spanned<String>>>,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    sink: &mut Sink<'_>,
) -> Vec<(String, Secret)> {
    let mut out = Vec::new();
    for (k, v) in map.unwrap_or_default() {
        if names_a_credential(&k) && !has_reference(v.get_ref()) {
            sink.at(
                Some(v.span()),
                format!("{prefix}.{k}"),
                "looks like a credential: give it as a `${env:NAME}` reference, never inline",
            );
            continue;
        }
        match resolve(v.get_ref(), lookup) {
            Ok(s) => out.push((k, s)),
            Err(e) => sink.at(Some(v.span()), format!("{prefix}.{k}"), e),
        }
    }
    out
}

/// The environment variables `template` references that `lookup` does not
/// know (a malformed reference is left for `resolve` to report).
pub fn unset(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    template
        .split("${env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| name)
        .filter(|name| lookup(name).is_none())
        .map(str::to_string)
        .collect()
}

/// Whether a template contains at least one reference.
pub fn has_reference(template: &str) -> bool {
    template.contains("${env:")
}

/// Names that say a value is a credential; such values must be references.
pub fn names_a_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "token",
        "secret",
        "password",
        "passwd",
        "api-key",
        "api_key",
        "apikey",
        "cookie",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "GH").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn resolves_references_inside_text() {
        assert_eq!(resolve("Bearer ${env:GH}", &env).unwrap().expose(), "Bearer s3cr3t");
        assert_eq!(resolve("plain", &env).unwrap().expose(), "plain");
    }

    #[test]
    fn refuses_missing_and_unknown_references() {
        assert!(resolve("${env:NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(resolve("${file:/x}", &env).unwrap_err().contains("only"));
        assert!(resolve("${env:GH", &env).is_err());
        assert_eq!(unset("${env:GH} ${env:NOPE} ${env:NOPE2}", &env), ["NOPE", "NOPE2"]);
        assert!(unset("plain", &env).is_empty());
    }

    #[test]
    fn debug_hides_the_value() {
        let s = resolve("${env:GH}", &env).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn credential_names_are_recognised() {
        assert!(names_a_credential("Authorization"));
        assert!(names_a_credential("GITHUB_TOKEN"));
        assert!(!names_a_credential("LOG_LEVEL"));
    }
}
