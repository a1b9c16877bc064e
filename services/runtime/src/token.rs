//! Bearer tokens as configuration: the [`Secret`] that holds one, and
//! [`load_token`], the one way every peergrid binary (market-node, trainer,
//! agent-node, `peergrid ctl`) reads a token from its environment.
//!
//! A token named `X` comes from the variable `X` or from the file named by
//! `X_FILE` (a mounted secret; one trailing newline is dropped). Setting
//! both is refused, since which would win is not obvious. Every token must
//! be at least [`MIN_TOKEN_LEN`] visible ASCII characters: it travels in an
//! HTTP header, and guessing it must be hopeless. Errors name the variable
//! (and the file) but never contain the token.
//!
//! This module reads the environment and files; it never logs.

use std::fmt;

use crate::error::RuntimeError;

/// Shortest accepted token, bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// A validated bearer token. `Debug`, `Display` and `Serialize` show
/// `<redacted>`; [`expose`](Secret::expose) is for the one place that
/// sends or compares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Checks `value` (at least [`MIN_TOKEN_LEN`] visible ASCII characters);
    /// `name` is the setting it came from, for the error.
    pub fn new(name: &str, value: impl Into<String>) -> Result<Secret, RuntimeError> {
        let value = value.into();
        if value.len() < MIN_TOKEN_LEN {
            return Err(RuntimeError::config(
                name,
                format!("must be at least {MIN_TOKEN_LEN} characters, got {}", value.len()),
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RuntimeError::config(name, "must be visible ASCII without spaces"));
        }
        Ok(Secret(value))
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// From a config file: validated like any other source.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let value = String::deserialize(d)?;
        Secret::new("token", value).map_err(serde::de::Error::custom)
    }
}

/// The variable naming the file variant of `var` (`X` → `X_FILE`).
pub fn file_var(var: &str) -> String {
    format!("{var}_FILE")
}

/// Reads the token `var` from the process environment (see
/// [`load_token_with`]).
pub fn load_token(var: &str) -> Result<Option<Secret>, RuntimeError> {
    load_token_with(var, |name| std::env::var(name).ok())
}

/// The token from the variable `var` or the file named by `var_FILE`
/// (`lookup` reads the environment), validated; `None` when neither is
/// set. Both set, an unreadable file or a bad token is an error naming the
/// variable.
pub fn load_token_with(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, RuntimeError> {
    let file_var = file_var(var);
    match (lookup(var), lookup(&file_var)) {
        (Some(_), Some(_)) => {
            Err(RuntimeError::config(var, format!("set either {var} or {file_var}, not both")))
        }
        (Some(token), None) => Secret::new(var, token).map(Some),
        (None, Some(path)) => {
            let contents = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Io {
                name: file_var.clone(),
                path: path.clone(),
                source,
            })?;
            Secret::new(&format!("{file_var} ({path})"), strip_one_newline(&contents)).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// `echo TOKEN > file` ends the file with one newline (`\r\n` on Windows
/// editors); anything else is part of the token (and fails validation if
/// it is whitespace).
fn strip_one_newline(contents: &str) -> &str {
    let s = contents.strip_suffix('\n').unwrap_or(contents);
    s.strip_suffix('\r').unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TOKEN: &str = "token-0123456789abcdef";
    const VAR: &str = "PEERGRID_TEST_TOKEN";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    /// A file in a fresh directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            let dir =
                std::env::temp_dir().join(format!("peergrid-token-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("token");
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn the_variable_or_its_file_but_not_both() {
        assert_eq!(load_token_with(VAR, env(&[])).unwrap(), None);
        assert_eq!(load_token_with(VAR, env(&[(VAR, TOKEN)])).unwrap().unwrap().expose(), TOKEN);
        let file = TempFile::new("file", &format!("{TOKEN}\n"));
        let from_file =
            load_token_with(VAR, env(&[("PEERGRID_TEST_TOKEN_FILE", file.path())])).unwrap();
        assert_eq!(from_file.unwrap().expose(), TOKEN, "one trailing newline is dropped");
        let both =
            load_token_with(VAR, env(&[(VAR, TOKEN), ("PEERGRID_TEST_TOKEN_FILE", file.path())]))
                .unwrap_err();
        let text = both.to_string();
        assert!(
            text.contains(VAR)
                && text.contains("PEERGRID_TEST_TOKEN_FILE")
                && text.contains("not both"),
            "{text}"
        );
        assert!(!text.contains(TOKEN), "{text}");
    }

    #[test]
    fn a_crlf_file_works_but_other_trailing_space_is_refused() {
        let crlf = TempFile::new("crlf", &format!("{TOKEN}\r\n"));
        assert_eq!(
            load_token_with(VAR, env(&[("PEERGRID_TEST_TOKEN_FILE", crlf.path())]))
                .unwrap()
                .unwrap()
                .expose(),
            TOKEN
        );
        let two = TempFile::new("two", &format!("{TOKEN}\n\n"));
        let e = load_token_with(VAR, env(&[("PEERGRID_TEST_TOKEN_FILE", two.path())]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PEERGRID_TEST_TOKEN_FILE")
                && e.contains(two.path())
                && e.contains("visible ASCII"),
            "{e}"
        );
    }

    #[test]
    fn short_tokens_name_the_minimum_and_never_echo_the_value() {
        let e = load_token_with(VAR, env(&[(VAR, "hunter2")])).unwrap_err().to_string();
        assert!(e.contains(VAR) && e.contains("at least 16") && e.contains("got 7"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let file = TempFile::new("short", "hunter2\n");
        let e = load_token_with(VAR, env(&[("PEERGRID_TEST_TOKEN_FILE", file.path())]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PEERGRID_TEST_TOKEN_FILE")
                && e.contains("at least 16")
                && !e.contains("hunter2"),
            "{e}"
        );
        assert!(Secret::new("t", "a".repeat(MIN_TOKEN_LEN)).is_ok());
        assert!(Secret::new("t", "a".repeat(MIN_TOKEN_LEN - 1)).is_err());
        assert!(Secret::new("t", "has a space in it!!").is_err());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load_token_with(
            VAR,
            env(&[("PEERGRID_TEST_TOKEN_FILE", "/nonexistent/peergrid-token")]),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("PEERGRID_TEST_TOKEN_FILE")
                && text.contains("/nonexistent/peergrid-token"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("t", TOKEN).unwrap();
        let shown = format!("{s} {s:?} {}", serde_json::to_string(&s).unwrap());
        assert!(!shown.contains(TOKEN) && shown.contains("<redacted>"), "{shown}");
        let parsed: Secret = serde_json::from_str(&format!("\"{TOKEN}\"")).unwrap();
        assert_eq!(parsed.expose(), TOKEN);
        let e = serde_json::from_str::<Secret>("\"short\"").unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
    }
}
