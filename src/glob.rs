//! Globs for tool names and URLs: `*` matches any run of characters, `?` exactly one.
//! Everything else matches itself; there are no classes or escapes, so a
//! glob can never be expensive to match (linear with one backtrack point).

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Where the last `*` was, and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_documented() {
        assert!(matches("*", "anything__at_all"));
        assert!(matches("github__create_*", "github__create_issue"));
        assert!(!matches("github__create_*", "github__delete_repo"));
        assert!(matches("github__create_issue", "github__create_issue"));
        assert!(!matches("github__create_issue", "github__create_issues"));
        assert!(matches("*__echo", "a__echo"));
        assert!(matches("f?x__*", "fix__y"));
        assert!(!matches("f?x__*", "fx__y"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("", "a"));
        assert!(matches("", ""));
    }
}
