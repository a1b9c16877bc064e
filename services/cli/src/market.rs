//! `peergrid market clear`: clear an order book from a CSV file and print the
//! result as JSON.
//!
//! Input: a CSV with header `id,side,kwh,limit_price`. Output:
//! `{"mechanism", "clearing_price", "matched_kwh", "fills": [{"id", "side", "kwh", "price"}]}`
//! with every order listed (unfilled ones with kwh 0). A malformed row exits
//! with status 2 and a message naming its line and column.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use peergrid_core::market::{self, fill_reports, FillReport, Mechanism, PairPricing};

#[derive(Subcommand, Debug)]
pub(crate) enum MarketCommand {
    /// Clear one order book and print fills and price as JSON.
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
        MarketCommand::Clear { orders, mechanism, k, pair_pricing } => {
            let label = orders.display().to_string();
            let book = if label == "-" {
                market::read_order_book(std::io::stdin().lock(), "<stdin>")?
            } else {
                let file = File::open(&orders).map_err(|e| peergrid_cli::InputError(format!("{label}: {e}")))?;
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
            println!("{}", serde_json::to_string_pretty(&out).context("serialising the result")?);
            Ok(())
        }
    }
}
