//! Load errors that name the file, the line and the field.
//!
//! Loading never stops at the first problem: every error found is collected
//! so an operator fixes a file in one pass, as `tollgate check` reports it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted path of the field (`transport.command`), empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error of one load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub Vec<Error>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Collects errors for one file, turning byte spans into line numbers.
pub struct Sink<'a> {
    file: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<Error>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a Path, text: &'a str, errors: &'a mut Vec<Error>) -> Self {
        Self { file, text, errors }
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    /// How many errors have been collected so far, in every file.
    pub fn count(&self) -> usize {
        self.errors.len()
    }

    pub fn at(&mut self, span: Option<Range<usize>>, field: impl Into<String>, message: impl Into<String>) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.errors.push(Error { file: self.file.to_path_buf(), line, field: field.into(), message: message.into() });
    }

    /// A TOML syntax or shape error from the parser, with its own span.
    pub fn toml(&mut self, err: &toml::de::Error) {
        let line = err.span().map(|s| line_of(self.text, s.start));
        // The parser's message carries a code excerpt; keep the first line only,
        // the location is given separately.
        let message = err.message().lines().next().unwrap_or("invalid TOML").to_string();
        let mut field = field_from_toml_message(err.message());
        if field.is_empty()
            && let Some(span) = err.span()
        {
            field = field_at(self.text, span.start);
        }
        self.errors.push(Error { file: self.file.to_path_buf(), line, field, message });
    }
}

/// The dotted name of the key whose value starts at `offset` (`server.max_body_bytes`),
/// read from the source: a type error names the line, and this names the field.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let Some((key, _)) = line.split_once('=') else { return String::new() };
    let key = key.trim().trim_matches('"');
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    if table.is_empty() { key.to_string() } else { format!("{table}.{key}") }
}

fn field_from_toml_message(message: &str) -> String {
    // serde messages such as "unknown field `foo`, expected ..." or "missing field `bar`"
    // name the field between backticks.
    message.split('`').nth(1).filter(|_| message.contains("field")).unwrap_or("").to_string()
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_error_names_its_field_from_the_source() {
        let text = "store = \"x\"\n[server]\nlisten = \"a\"\nmax_body_bytes = \"big\"\n";
        assert_eq!(field_at(text, text.find("\"big\"").unwrap()), "server.max_body_bytes");
        assert_eq!(field_at(text, text.find("\"x\"").unwrap()), "store");
        let manifest = "name = \"x\"\n[[tools]]\nconnect_timeout = 5\n";
        assert_eq!(field_at(manifest, manifest.find('5').unwrap()), "tools.connect_timeout");
    }

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let text = "a = 1\nb = 2\nc = 3\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, 12), 3);
        assert_eq!(line_of(text, 10_000), 4);
    }

    #[test]
    fn display_names_file_line_and_field() {
        let e = Error {
            file: "m.toml".into(),
            line: Some(3),
            field: "transport.command".into(),
            message: "must not be empty".into(),
        };
        assert_eq!(e.to_string(), "m.toml:3: transport.command: must not be empty");
    }
}
