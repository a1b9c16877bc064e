//! Which dataset a run plays, named the same way by every node and command.
//!
//! A [`DatasetKind`] is what a flag, a variable or a config file names
//! (`bundled`, `synthetic`, `citylearn-csv`, `ausgrid-csv`); the two CSV
//! kinds also need a file. [`DatasetSource::new`] checks that pair once and
//! [`DatasetSource::load`] is the one loader behind the market-node, the
//! agent-node and `peergrid run`/`eval`, so a cluster plays exactly what the
//! embedded run plays (the market tells registering nodes the dataset's name
//! and they refuse to trade on another).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ausgrid, citylearn, synthetic, Dataset};
use crate::error::CoreError;

/// The kinds of dataset, as flags, variables and config files spell them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// One year of measured hourly data from 17 homes (CityLearn 2022, Fontana CA), built in.
    #[default]
    Bundled,
    /// The standard seeded synthetic year (17 homes, 364 days, hourly; no real data).
    Synthetic,
    /// A tidy CSV in the bundled file's format (needs a data file).
    CitylearnCsv,
    /// An Ausgrid Solar Home CSV (needs a data file).
    AusgridCsv,
}

impl DatasetKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::Bundled,
        DatasetKind::Synthetic,
        DatasetKind::CitylearnCsv,
        DatasetKind::AusgridCsv,
    ];

    /// The name flags and files use.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Bundled => "bundled",
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::CitylearnCsv => "citylearn-csv",
            DatasetKind::AusgridCsv => "ausgrid-csv",
        }
    }

    /// Whether this kind is read from a file.
    pub fn needs_file(self) -> bool {
        matches!(self, DatasetKind::CitylearnCsv | DatasetKind::AusgridCsv)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<DatasetKind, CoreError> {
        DatasetKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
            CoreError::invalid("dataset", format!("must be one of {}, got '{s}'", names.join(", ")))
        })
    }
}

/// A dataset to load: a kind and, for the CSV kinds, its file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DatasetSource {
    /// The CityLearn 2022 extract bundled with the crate.
    Bundled,
    /// The small deterministic synthetic dataset.
    Synthetic,
    /// A CityLearn CSV file.
    CitylearnCsv(PathBuf),
    /// An Ausgrid solar home CSV file.
    AusgridCsv(PathBuf),
}

impl DatasetSource {
    /// The source `kind` and `file` describe: a CSV kind needs a file, the
    /// others take none (errors name the `data_file` field).
    pub fn new(kind: DatasetKind, file: Option<PathBuf>) -> Result<DatasetSource, CoreError> {
        match (kind, file) {
            (DatasetKind::Bundled, None) => Ok(DatasetSource::Bundled),
            (DatasetKind::Synthetic, None) => Ok(DatasetSource::Synthetic),
            (DatasetKind::CitylearnCsv, Some(f)) if !f.as_os_str().is_empty() => {
                Ok(DatasetSource::CitylearnCsv(f))
            }
            (DatasetKind::AusgridCsv, Some(f)) if !f.as_os_str().is_empty() => {
                Ok(DatasetSource::AusgridCsv(f))
            }
            (kind, Some(f)) if !kind.needs_file() => Err(CoreError::invalid(
                "data_file",
                format!(
                    "is only read for the CSV datasets, not for dataset {kind} (got '{}')",
                    f.display()
                ),
            )),
            (kind, _) => Err(CoreError::invalid(
                "data_file",
                format!("is required for dataset {kind}: the CSV file's path"),
            )),
        }
    }

    /// Which kind this is.
    pub fn kind(&self) -> DatasetKind {
        match self {
            DatasetSource::Bundled => DatasetKind::Bundled,
            DatasetSource::Synthetic => DatasetKind::Synthetic,
            DatasetSource::CitylearnCsv(_) => DatasetKind::CitylearnCsv,
            DatasetSource::AusgridCsv(_) => DatasetKind::AusgridCsv,
        }
    }

    /// The file a CSV source reads.
    pub fn file(&self) -> Option<&Path> {
        match self {
            DatasetSource::CitylearnCsv(f) | DatasetSource::AusgridCsv(f) => Some(f),
            DatasetSource::Bundled | DatasetSource::Synthetic => None,
        }
    }

    /// Loads and validates the dataset (errors name file, line and column).
    pub fn load(&self) -> Result<Dataset, CoreError> {
        match self {
            DatasetSource::Bundled => citylearn::bundled_citylearn(),
            DatasetSource::Synthetic => Ok(synthetic::standard_synthetic()),
            DatasetSource::CitylearnCsv(f) => citylearn::load_citylearn_csv(f),
            DatasetSource::AusgridCsv(f) => ausgrid::load_ausgrid_csv(f),
        }
    }
}

impl fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.file() {
            Some(file) => write!(f, "{} ({})", self.kind(), file.display()),
            None => write!(f, "{}", self.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names_and_a_bad_name_lists_them_all() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        let e = "ausgrid".parse::<DatasetKind>().unwrap_err().to_string();
        assert!(
            e.contains("dataset") && e.contains("bundled, synthetic, citylearn-csv, ausgrid-csv"),
            "{e}"
        );
    }

    #[test]
    fn a_csv_kind_needs_a_file_and_the_others_refuse_one() {
        let f = || Some(PathBuf::from("homes.csv"));
        assert_eq!(DatasetSource::new(DatasetKind::Bundled, None).unwrap(), DatasetSource::Bundled);
        assert_eq!(
            DatasetSource::new(DatasetKind::AusgridCsv, f()).unwrap().file(),
            Some(Path::new("homes.csv"))
        );
        for (kind, file) in [
            (DatasetKind::Synthetic, f()),
            (DatasetKind::CitylearnCsv, None),
            (DatasetKind::AusgridCsv, Some(PathBuf::new())),
        ] {
            let e = DatasetSource::new(kind, file).unwrap_err();
            assert!(
                matches!(&e, CoreError::InvalidField { field, .. } if field == "data_file"),
                "{kind}: {e}"
            );
        }
    }

    #[test]
    fn a_source_loads_what_its_loader_loads() {
        assert_eq!(DatasetSource::Synthetic.load().unwrap(), synthetic::standard_synthetic());
        assert_eq!(DatasetSource::Bundled.load().unwrap().name, "citylearn2022-fontana");
        let missing = DatasetSource::AusgridCsv(PathBuf::from("/nonexistent/ausgrid.csv"))
            .load()
            .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/ausgrid.csv"), "{missing}");
    }
}
