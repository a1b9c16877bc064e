//! `peergrid market clear`: clear an order book from a CSV file and print the
//! result.
//!
//! Input: a CSV with header `id,side,kwh,limit_price`. Output, by `--format`:
//! - `json` (the default): `{"mechanism", "clearing_price", "matched_kwh",
//!   "fills": [{"id", "side", "kwh", "price"}]}`, pretty-printed;
//! - `jsonl`: `{"mechanism", "clearing_price", "matched_kwh", "orders"}` on
//!   the first line, then one `{"id", "side", "kwh", "price"}` per line;
//! - `csv`: `id,side,kwh,price` rows under a header (price empty when unfilled).
//!
//! Every order is listed (unfilled ones with kwh 0). A malformed row exits
//! with status 2 and a message naming its line and column.

use std::fs::File;
use std::path::PathBuf;

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use peergrid_cli::output::{csv_line, csv_opt, Format};

use peergrid_core::market::{self, fill_reports, FillReport, Mechanism, PairPricing};

#[derive(Subcommand, Debug)]
pub(crate) enum MarketCommand {
    /// Clear one order book and print fills and price (JSON by default).
    Clear {
        /// CSV file with header `id,side,kwh,limit_price` (`-` for stdin).
        #[arg(long)]
        orders: PathBuf,
        #[arg(long, value_enum, default_value_t = MechanismArg::Uniform)]
        mechanism: MechanismArg,
        /// Uniform price: position in the clearing interval (0 = lower end, 1 = upper end).
        #[arg(long, default_value_t = 0.5)]
        k: f64,
        /// Pay-as-bid: price each matched pair at the buyer's limit or at the midpoint.
        #[arg(long, value_enum, default_value_t = PairPricingArg::BuyerLimit)]
        pair_pricing: PairPricingArg,
        /// json (one document), jsonl (a summary line, then a line per order) or csv (the fills).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum MechanismArg {
    Uniform,
    PayAsBid,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum PairPricingArg {
    BuyerLimit,
    Midpoint,
}

#[derive(Serialize)]
struct ClearOutput<'a> {
    mechanism: &'a str,
    clearing_price: Option<f64>,
    matched_kwh: f64,
    fills: Vec<FillReport>,
}

pub(crate) fn run(cmd: MarketCommand) -> Result<()> {
    match cmd {
        MarketCommand::Clear { orders, mechanism, k, pair_pricing, format } => {
            let label = orders.display().to_string();
            let book = if label == "-" {
                market::read_order_book(std::io::stdin().lock(), "<stdin>")?
            } else {
                let file = File::open(&orders)
                    .map_err(|e| peergrid_runtime::BadInput::new(format!("{label}: {e}")))?;
                market::read_order_book(file, &label)?
            };
            let mechanism = match mechanism {
                MechanismArg::Uniform => Mechanism::Uniform { k },
                MechanismArg::PayAsBid => Mechanism::PayAsBid {
                    pricing: match pair_pricing {
                        PairPricingArg::BuyerLimit => PairPricing::BuyerLimit,
                        PairPricingArg::Midpoint => PairPricing::Midpoint,
                    },
                },
            };
            let clearing = market::clear(&book.orders, mechanism, None)?;
            let out = ClearOutput {
                mechanism: mechanism.name(),
                clearing_price: clearing.clearing_price.map(|p| p.per_kwh()),
                matched_kwh: clearing.matched.kwh(),
                fills: fill_reports(&book, &clearing),
            };
            print_clear(&out, format)
        }
    }
}

/// Prints a clearing result in `format` (text is JSON: there is no table).
fn print_clear(out: &ClearOutput<'_>, format: Format) -> Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Text | Format::Json => {
            writeln!(w, "{}", serde_json::to_string_pretty(out).context("serialising the result")?)?
        }
        Format::Jsonl => {
            let summary = serde_json::json!({
                "mechanism": out.mechanism,
                "clearing_price": out.clearing_price,
                "matched_kwh": out.matched_kwh,
                "orders": out.fills.len(),
            });
            writeln!(w, "{summary}")?;
            for fill in &out.fills {
                writeln!(w, "{}", serde_json::to_string(fill).context("serialising a fill")?)?;
            }
        }
        Format::Csv => {
            writeln!(w, "id,side,kwh,price")?;
            for f in &out.fills {
                writeln!(
                    w,
                    "{}",
                    csv_line(&[
                        f.id.clone(),
                        f.side.as_str().to_owned(),
                        f.kwh.to_string(),
                        csv_opt(f.price)
                    ])
                )?;
            }
        }
    }
    w.flush()?;
    Ok(())
}
