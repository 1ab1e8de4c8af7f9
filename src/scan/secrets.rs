//! Secrets: API keys and tokens of the common providers, private keys,
//! JWTs, credentials in URLs and auth headers, and high-entropy values
//! right after a key-like name (`DB_PASSWORD=...`, `"client_secret": ...`).
//!
//! Shapes with a fixed prefix are one alternation (the regex engine turns
//! the prefixes into a literal prefilter, so ordinary text costs little);
//! key-named values are found from the key name and kept only when the value
//! looks random (length, character classes, entropy), so `password: changeme`
//! and `token = "${env:TOKEN}"` are not reported. The audit's redaction uses
//! this same detector: whatever it finds never reaches the store or a log.

use std::sync::LazyLock;

use regex::Regex;

use super::detector::{Action, Detector, Direction, Hit, apply, entropy};

pub struct Secrets;

const KINDS: &[&str] = &[
    "tollgate_key",
    "anthropic_key",
    "openai_key",
    "stripe_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "google_api_key",
    "npm_token",
    "huggingface_token",
    "sendgrid_key",
    "private_key",
    "jwt",
    "bearer_token",
    "basic_auth",
    "connection_string",
    "keyed_secret",
];

/// Fixed shapes, in the order of `SHAPE_KINDS`; at one position the first
/// alternative wins (`sk-ant-` before `sk-`).
static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    let alternatives: Vec<String> = SHAPE_KINDS.iter().map(|(_, p)| format!("({p})")).collect();
    Regex::new(&alternatives.join("|")).expect("secret shapes compile")
});

const SHAPE_KINDS: &[(&str, &str)] = &[
    ("tollgate_key", r"(?-u:\b)tg_[0-9a-fA-F]{16,}"),
    ("anthropic_key", r"(?-u:\b)sk-ant-[A-Za-z0-9_\-]{20,}"),
    ("openai_key", r"(?-u:\b)sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"),
    ("stripe_key", r"(?-u:\b)(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),
    ("github_token", r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ("gitlab_token", r"(?-u:\b)glpat-[A-Za-z0-9_\-]{20,}"),
    (
        "slack_token",
        r"(?-u:\b)(?:xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-[A-Za-z0-9\-]{10,})|https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+",
    ),
    ("aws_access_key_id", r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?-u:\b)"),
    ("google_api_key", r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}"),
    ("npm_token", r"(?-u:\b)npm_[A-Za-z0-9]{36}"),
    ("huggingface_token", r"(?-u:\b)hf_[A-Za-z0-9]{30,}"),
    ("sendgrid_key", r"(?-u:\b)SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"),
    (
        "private_key",
        r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|$)",
    ),
    (
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}|(?-u:\b)eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    ),
    ("bearer_token", r"(?-u:\b)(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{16,}"),
    ("basic_auth", r"(?-u:\b)(?i:basic)\s+[A-Za-z0-9+/]{16,}={0,2}"),
];

/// `scheme://user:password@`: the hit is `user:password`.
static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[A-Za-z][A-Za-z0-9+.\-]*://([^/\s:@'`]+:[^/\s@]+)@[A-Za-z0-9\[]")
        .expect("URL pattern compiles")
});

/// A key-like name, an assignment, and the value (capture 2).
static KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)([A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|credential)[A-Za-z0-9_\-]*)",
        r#"["']?\s*(?::|=|:=|=>)\s*["']?([^\s"'<>,;`{}()\[\]]{12,})"#,
    ))
    .expect("keyed pattern compiles")
});

/// `text` with every secret `find` reports replaced by `mark` (overlapping
/// hits merged, so no tail of one is left in clear).
pub fn redact<'a>(text: &'a str, mark: &str) -> std::borrow::Cow<'a, str> {
    let mut hits = Vec::new();
    find(text, None, &mut hits);
    if hits.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let edits = hits.into_iter().map(|h| (h.start, h.end, Some(mark.to_string()))).collect();
    std::borrow::Cow::Owned(apply(text, edits))
}

/// Whether a property name says its value is a secret whatever it looks like.
pub fn secret_name(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const NAMES: &[&str] = &[
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "clientsecret",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "sessionid",
        "passphrase",
    ];
    NAMES.iter().any(|k| n == *k || n.ends_with(k) && (k.len() >= 5 || n.len() == k.len()))
}

/// Whether `v` looks like a generated secret rather than a word, a
/// placeholder or a reference.
fn random_looking(v: &str) -> bool {
    if v.len() < 12 || v.len() > 512 || placeholder(v) {
        return false;
    }
    if v.contains('$')
        || v.contains('%') && !v.contains("%2")
        || v.starts_with("http")
        || v.contains('/') && v.contains('.')
    {
        return false;
    }
    let classes = [
        v.chars().any(|c| c.is_ascii_lowercase()),
        v.chars().any(|c| c.is_ascii_uppercase()),
        v.chars().any(|c| c.is_ascii_digit()),
        v.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let has_digit = v.chars().any(|c| c.is_ascii_digit());
    // A short random string cannot reach a long one's entropy (16 hex digits
    // average about 3.5 bits a character): the bar scales with the length.
    let bar = if v.len() >= 24 {
        3.3
    } else if v.len() >= 16 {
        3.0
    } else {
        2.8
    };
    classes >= 2 && has_digit && entropy(v) >= bar
}

/// Template text where a secret would go, not a secret.
fn placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    ["your_", "your-", "<your", "xxxx", "${", "env:", "placeholder", "redacted", "changeme", "****", "{{"]
        .iter()
        .any(|p| lower.contains(p))
        || v.chars().all(|c| c == v.chars().next().unwrap_or(c))
}

/// Whether a key name and value are AWS's secret access key.
fn aws_secret(key: &str, value: &str) -> bool {
    let k: String = key.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    (k.contains("aws") && k.contains("secret") || k.contains("secretaccesskey"))
        && value.len() == 40
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '+')
}

/// Every secret in `text`. `key`: the JSON property `text` is the value of.
pub fn find(text: &str, key: Option<&str>, out: &mut Vec<Hit>) {
    let first = out.len();
    // Under a key that names a secret, the value is one whatever it looks
    // like, unless it is a placeholder or a reference.
    if let Some(k) = key
        && secret_name(k)
        && text.len() >= 4
        && text.len() <= 4096
        && !text.chars().any(char::is_whitespace)
        && !placeholder(text)
    {
        let kind = if aws_secret(k, text) { "aws_secret_access_key" } else { "keyed_secret" };
        out.push(Hit { start: 0, end: text.len(), kind });
        return;
    }
    for caps in SHAPES.captures_iter(text) {
        // Each shape is one group (shapes have no groups of their own).
        let Some((i, m)) = caps.iter().skip(1).enumerate().find_map(|(i, m)| m.map(|m| (i, m))) else { continue };
        let kind = SHAPE_KINDS[i].0;
        // `basic internationalization` is prose: a credential mixes classes.
        if kind == "basic_auth" {
            let token = m.as_str().split_whitespace().nth(1).unwrap_or("");
            let mixed = token.chars().any(|c| c.is_ascii_digit() || "+/=".contains(c))
                || token.chars().any(|c| c.is_ascii_uppercase()) && token.chars().any(|c| c.is_ascii_lowercase());
            if !mixed {
                continue;
            }
        }
        out.push(Hit { start: m.start(), end: m.end(), kind });
    }
    for caps in URL_CREDENTIALS.captures_iter(text) {
        if let Some(m) = caps.get(1) {
            out.push(Hit { start: m.start(), end: m.end(), kind: "connection_string" });
        }
    }
    for caps in KEYED.captures_iter(text) {
        let (Some(k), Some(v)) = (caps.get(1), caps.get(2)) else { continue };
        let value = v.as_str().trim_end_matches(['.', ':']);
        if !random_looking(value) || out[first..].iter().any(|h| h.start < v.end() && v.start() < h.end) {
            continue;
        }
        let kind = if aws_secret(k.as_str(), value) { "aws_secret_access_key" } else { "keyed_secret" };
        out.push(Hit { start: v.start(), end: v.start() + value.len(), kind });
    }
}

impl Detector for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn actions(&self, _direction: Direction) -> &'static [Action] {
        &[Action::Block, Action::Mask]
    }

    fn default_action(&self, direction: Direction) -> Action {
        match direction {
            Direction::Arguments => Action::Log,
            Direction::Results => Action::Mask,
        }
    }

    fn label(&self, _kind: &str) -> &'static str {
        "SECRET"
    }

    fn find(&self, text: &str, key: Option<&str>, out: &mut Vec<Hit>) {
        find(text, key, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str, key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        find(text, key, &mut out);
        out.into_iter().map(|h| (h.kind, text[h.start..h.end].to_string())).collect()
    }

    #[test]
    fn provider_shapes() {
        let cases: &[(&str, &str, &str)] = &[
            ("key tg_0123456789abcdef0123456789abcdef end", "tollgate_key", "tg_0123456789abcdef0123456789abcdef"),
            ("OPENAI_API_KEY=sk-proj-AbCdEfGhIjKlMnOpQrStUv12", "openai_key", "sk-proj-AbCdEfGhIjKlMnOpQrStUv12"),
            ("x sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx y", "anthropic_key", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx"),
            ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github_token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ("glpat-AbCdEfGhIjKlMnOpQrSt", "gitlab_token", "glpat-AbCdEfGhIjKlMnOpQrSt"),
            ("xoxb-1234567890-abcdefghij", "slack_token", "xoxb-1234567890-abcdefghij"),
            ("id AKIAIOSFODNN7EXAMPLE.", "aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
            ("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "google_api_key", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
            ("npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "npm_token", "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlaGVyZQ",
                "jwt",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlaGVyZQ",
            ),
            ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "bearer_token", "Bearer abcdefghijklmnopqrstuvwxyz"),
            ("postgres://app:hunter2hunter2@db:5432/x", "connection_string", "app:hunter2hunter2"),
        ];
        for (text, kind, found) in cases {
            assert_eq!(kinds(text, None), vec![(*kind, found.to_string())], "{text}");
        }
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----";
        assert_eq!(kinds(pem, None), vec![("private_key", pem.to_string())]);
    }

    #[test]
    fn key_named_values_only_when_random() {
        assert_eq!(
            kinds("DB_PASSWORD=q8Zr2LmX7vN4tKp9Wc3s", None),
            vec![("keyed_secret", "q8Zr2LmX7vN4tKp9Wc3s".to_string())]
        );
        assert_eq!(
            kinds("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)[0].0,
            "aws_secret_access_key"
        );
        assert_eq!(kinds("q8Zr2LmX7vN4tKp9Wc3s", Some("client_secret"))[0].0, "keyed_secret");
        for benign in [
            "password: changeme",
            "token = \"${env:TOKEN}\"",
            "api_key = \"YOUR_API_KEY_HERE\"",
            "password_policy = \"min 12 chars\"",
            "the tokenizer splits text",
            "a password reset link was sent",
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "https://example.com:8080/path",
            "pk_live_51H8abcdefghijklmnop",
            "scikit-learn (sk-learn) is a library",
        ] {
            assert_eq!(kinds(benign, None), vec![], "{benign}");
        }
        assert_eq!(kinds("changeme", Some("password")), vec![]);
        assert_eq!(
            kinds("hunter2", Some("password"))[0].0,
            "keyed_secret",
            "under a secret name, whatever it looks like"
        );
        assert_eq!(kinds("${env:DB_PASSWORD}", Some("password")), vec![]);
        assert_eq!(kinds("basic internationalization support", None), vec![]);
        assert_eq!(kinds("AUTHORIZATION: BEARER abcdefghijklmnopqrstuvwxyz", None)[0].0, "bearer_token");
    }

    #[test]
    fn redact_removes_every_secret_whatever_order_they_are_found_in() {
        // Shapes are found before URL credentials, whatever their place in the text.
        let text = "db postgres://app:p4ssw0rd-x@h/x then AKIAIOSFODNN7EXAMPLE";
        assert_eq!(redact(text, "[X]"), "db postgres://[X]@h/x then [X]");
        assert!(matches!(redact("nothing here", "[X]"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn secret_names() {
        for n in ["password", "DB_PASSWORD", "api_key", "apiKey", "client_secret", "githubToken"] {
            assert!(secret_name(n), "{n}");
        }
        for n in ["author", "tokens", "max_tokens", "description", "path"] {
            assert!(!secret_name(n), "{n}");
        }
    }
}
