//! Matching a URI against an RFC 6570 template, enough to route a read.
//!
//! Literal parts must appear in order; each `{...}` expression matches one
//! non-empty run of characters. This routes; the upstream still decides.

pub fn matches(template: &str, uri: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        parts.push(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => rest = &rest[open + close + 1..],
            None => return false,
        }
    }
    parts.push(rest);
    if parts.len() == 1 {
        return template == uri;
    }
    let Some(mut remaining) = uri.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts.len() - 1;
    for (i, literal) in parts.iter().enumerate().skip(1) {
        if i == last {
            return remaining.len() > literal.len() && remaining.ends_with(literal)
                || (literal.is_empty() && !remaining.is_empty());
        }
        if literal.is_empty() {
            continue;
        }
        // The variable before this literal must be non-empty.
        let Some(first) = remaining.chars().next() else { return false };
        let skip = first.len_utf8();
        match remaining[skip..].find(literal) {
            Some(pos) => remaining = &remaining[skip + pos + literal.len()..],
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn routes_by_template() {
        assert!(matches("test://static/resource/{id}", "test://static/resource/7"));
        assert!(!matches("test://static/resource/{id}", "test://static/resource/"));
        assert!(!matches("test://static/resource/{id}", "other://x"));
        assert!(matches("file:///{path}.md", "file:///docs/a.md"));
        assert!(!matches("file:///{path}.md", "file:///docs/a.txt"));
        assert!(matches("db://{schema}/{table}", "db://public/users"));
        assert!(matches("plain://x", "plain://x"));
        assert!(matches("db://{schema}/{table}", "db://é/users"), "non-ASCII variable values");
        assert!(!matches("plain://x", "plain://y"));
    }
}
