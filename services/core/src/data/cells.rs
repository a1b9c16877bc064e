//! Cell-level parsing shared by the CSV loaders.
//!
//! Owns the conversion of one text cell into a checked number and of a `csv`
//! crate error into a [`CoreError`] that names file, line and column. Every
//! loader goes through here so that "NaN", "inf", an empty cell or a negative
//! energy are rejected with the same wording everywhere. Must never skip or
//! repair a bad cell: the caller decides, this module only reports.

use crate::error::CoreError;

/// Where a cell is: enough to build a [`CoreError::Data`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct CellAt<'a> {
    pub file: &'a str,
    /// 1-based physical line of the record.
    pub line: u64,
    pub column: &'a str,
}

impl CellAt<'_> {
    pub(super) fn error(&self, reason: impl Into<String>) -> CoreError {
        CoreError::data(self.file, self.line, self.column, reason)
    }

    /// A finite number; rejects empty cells, NaN and ±inf.
    pub(super) fn finite(&self, text: &str) -> Result<f64, CoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(self.error("empty cell"));
        }
        let value: f64 =
            text.parse().map_err(|_| self.error(format!("{text:?} is not a number")))?;
        if !value.is_finite() {
            return Err(self.error(format!("{text:?} is not finite")));
        }
        Ok(value)
    }

    /// A finite, non-negative quantity (energy, capacity, intensity).
    pub(super) fn non_negative(&self, text: &str) -> Result<f64, CoreError> {
        let value = self.finite(text)?;
        if value < 0.0 {
            return Err(self.error(format!("{value} is negative")));
        }
        Ok(value)
    }

    /// An unsigned integer such as a slot index or a building number.
    pub(super) fn unsigned(&self, text: &str) -> Result<u64, CoreError> {
        let text = text.trim();
        text.parse().map_err(|_| self.error(format!("{text:?} is not a non-negative integer")))
    }
}

/// Maps a `csv` reader error (ragged row, invalid UTF-8, I/O) to a domain error.
pub(crate) fn csv_error(file: &str, err: csv::Error) -> CoreError {
    let line = err.position().map_or(0, |p| p.line());
    match err.into_kind() {
        csv::ErrorKind::Io(source) => CoreError::Io { file: file.to_string(), source },
        kind => CoreError::data(file, line, "-", csv_kind_reason(kind)),
    }
}

fn csv_kind_reason(kind: csv::ErrorKind) -> String {
    match kind {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("row has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8: {err}"),
        other => format!("{other:?}"),
    }
}

/// Opens a data file, mapping the failure to [`CoreError::Io`].
pub(crate) fn open(path: &std::path::Path) -> Result<std::fs::File, CoreError> {
    std::fs::File::open(path)
        .map_err(|source| CoreError::Io { file: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: CellAt<'static> = CellAt { file: "f.csv", line: 3, column: "load_kwh" };

    #[test]
    fn rejects_nan_inf_empty_and_negative() {
        assert_eq!(AT.finite(" 1.5 ").unwrap(), 1.5);
        for bad in ["NaN", "nan", "inf", "-inf", "", "x"] {
            assert!(AT.finite(bad).is_err(), "{bad}");
        }
        assert!(AT.non_negative("-0.1").is_err());
        assert_eq!(AT.non_negative("0").unwrap(), 0.0);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let msg = AT.finite("NaN").unwrap_err().to_string();
        assert!(msg.starts_with("f.csv:3: column load_kwh:"), "{msg}");
    }
}
