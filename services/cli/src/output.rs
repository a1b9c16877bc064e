//! How a command prints what can be large: `--format text|json|jsonl|csv`.
//!
//! - `json`: one document (pretty-printed where a person may read it);
//! - `jsonl`: one compact JSON object per line — a header line, then one
//!   line per row — so a large result streams through `jq -c`, `grep` or
//!   `head` without holding it whole;
//! - `csv`: the rows only, with a header line (RFC 4180 quoting), for
//!   spreadsheets and data frames.
//!
//! Commands choose which formats they offer and say so in their help.

use std::borrow::Cow;

use clap::ValueEnum;

/// An output format (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: aligned text.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// One compact JSON object per line.
    Jsonl,
    /// Comma-separated rows with a header line.
    Csv,
}

/// One CSV field: quoted (with inner quotes doubled) when it holds a
/// comma, a quote or a line break, as RFC 4180 requires; as is otherwise.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// One CSV line (without its line break) of `fields`.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields.iter().map(|f| csv_field(f.as_ref())).collect::<Vec<_>>().join(",")
}

/// An optional number as a CSV field: empty when absent.
pub fn csv_opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("A1"), "A1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_line(&["id", "x,y", ""]), "id,\"x,y\",");
        assert_eq!((csv_opt(Some(0.145)), csv_opt(None)), ("0.145".to_owned(), String::new()));
    }
}
