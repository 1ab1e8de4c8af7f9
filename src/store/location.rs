//! Where a store is, said without its password.

/// A store URL without its password, for messages.
/// See [`Store::location`].
#[derive(Debug, Clone)]
pub struct Location {
    pub text: String,
    /// `false` for a SQLite file not created yet.
    pub exists: bool,
}

pub fn scrub(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
