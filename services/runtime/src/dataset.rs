//! The dataset flags every node and `peergrid run`/`eval` share:
//! `--dataset KIND` (`PEERGRID_DATASET`) and `--data-file PATH`
//! (`PEERGRID_DATA_FILE`), merged over a config file's `dataset` and
//! `data_file` fields by [`DatasetArgs::apply`]. The variables are cluster-wide
//! on purpose: the market and every agent-node must play the same dataset.

use std::path::PathBuf;

use peergrid_core::data::{DatasetKind, DatasetSource};
use peergrid_core::CoreError;

/// `--dataset` and `--data-file`.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct DatasetArgs {
    /// Dataset: bundled (measured, built in), synthetic, citylearn-csv or
    /// ausgrid-csv (the last two read --data-file) [default: bundled].
    #[arg(long, env = "PEERGRID_DATASET")]
    pub dataset: Option<DatasetKind>,
    /// The CSV file of a citylearn-csv or ausgrid-csv dataset.
    #[arg(long, env = "PEERGRID_DATA_FILE")]
    pub data_file: Option<PathBuf>,
}

impl DatasetArgs {
    /// Overrides a config's `dataset`/`data_file` with what was given here
    /// (a new kind drops the config's file unless a file is given too), and
    /// returns the checked source.
    pub fn apply(
        &self,
        kind: &mut DatasetKind,
        file: &mut Option<PathBuf>,
    ) -> Result<DatasetSource, CoreError> {
        if let Some(k) = self.dataset {
            if k != *kind && self.data_file.is_none() {
                *file = None;
            }
            *kind = k;
        }
        if self.data_file.is_some() {
            file.clone_from(&self.data_file);
        }
        DatasetSource::new(*kind, file.clone()).map_err(|e| match e {
            CoreError::InvalidField { field, reason } if field == "data_file" => {
                CoreError::invalid(field, format!("{reason} (--data-file or PEERGRID_DATA_FILE)"))
            }
            other => other,
        })
    }
}

/// Variables an earlier release read, with the name that replaced them.
pub const RENAMED_ENV: [(&str, &str); 1] = [("PEERGRID_MARKET_DATASET", "PEERGRID_DATASET")];

/// Refuses to start on a variable that was renamed (it would be ignored
/// silently otherwise); `lookup` reads the environment.
pub fn check_renamed_env(lookup: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    match RENAMED_ENV.iter().find(|(old, _)| lookup(old).is_some()) {
        Some((old, new)) => {
            Err(format!("{old} is no longer read: it was renamed {new} (set that instead)"))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DatasetArgs,
    }

    fn parse(args: &[&str]) -> Result<DatasetArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("node").chain(args.iter().copied())).map(|c| c.data)
    }

    #[test]
    fn flags_override_the_config_and_the_pair_is_checked() {
        let (mut kind, mut file) = (DatasetKind::AusgridCsv, Some(PathBuf::from("config.csv")));
        let none = parse(&[]).unwrap();
        assert_eq!(
            none.apply(&mut kind, &mut file).unwrap(),
            DatasetSource::AusgridCsv("config.csv".into())
        );
        let file_only = parse(&["--data-file", "flag.csv"]).unwrap();
        assert_eq!(
            file_only.apply(&mut kind, &mut file).unwrap(),
            DatasetSource::AusgridCsv("flag.csv".into())
        );
        let kind_only = parse(&["--dataset", "synthetic"]).unwrap();
        assert_eq!(kind_only.apply(&mut kind, &mut file).unwrap(), DatasetSource::Synthetic);
        assert_eq!(file, None, "a new kind without a file drops the config's file");
        let csv_without_file = parse(&["--dataset", "citylearn-csv"]).unwrap();
        let e = csv_without_file.apply(&mut kind, &mut file).unwrap_err().to_string();
        assert!(
            e.contains("data_file") && e.contains("citylearn-csv") && e.contains("--data-file"),
            "{e}"
        );
    }

    #[test]
    fn a_renamed_variable_stops_the_start_and_names_its_successor() {
        assert_eq!(check_renamed_env(|_| None), Ok(()));
        let e = check_renamed_env(|name| {
            (name == "PEERGRID_MARKET_DATASET").then(|| "synthetic".into())
        })
        .unwrap_err();
        assert!(
            e.contains("PEERGRID_MARKET_DATASET") && e.contains("renamed PEERGRID_DATASET"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_known_ones() {
        let e = parse(&["--dataset", "nope"]).unwrap_err().to_string();
        assert!(
            e.contains("--dataset") && e.contains("bundled, synthetic, citylearn-csv, ausgrid-csv"),
            "{e}"
        );
    }
}
