//! The machine-readable files of a report: `kpis.json`, `kpis.csv`,
//! `slots.csv` and `config.json`. All are deterministic: the same run gives the same
//! bytes (floats are written in their shortest round-trip form, maps in a
//! fixed order, no timings).

use std::collections::BTreeMap;

use peergrid_core::forecast::ForecastErrors;
use peergrid_core::kpi::Kpis;
use peergrid_core::prosumer::CommunityConfig;
use peergrid_core::simulation::SimConfig;
use serde::Serialize;

use super::day::RepresentativeDay;
use super::{LearningPoint, RunInfo};
use crate::compare::{EvalScenario, Evaluation, OptimumReport};
use crate::error::EvalError;
use crate::mpc::{MpcReport, MPC};

/// Identifies the layout of `kpis.json` (v2: `run.split` and
/// `run.evaluated_on` replace v1's `run.eval_every_nth_week`).
pub(super) const KPIS_FORMAT: &str = "peergrid-kpis-v2";

/// A field of [`Kpis`] by name.
pub(super) type KpiField = (&'static str, fn(&Kpis) -> f64);

/// Every field of [`Kpis`], in declaration order: the columns of `kpis.csv`.
pub(super) const KPI_FIELDS: [KpiField; 20] = [
    ("slots", |k| k.slots as f64),
    ("prosumers", |k| k.prosumers as f64),
    ("load_kwh", |k| k.load_kwh),
    ("pv_kwh", |k| k.pv_kwh),
    ("grid_import_kwh", |k| k.grid_import_kwh),
    ("grid_export_kwh", |k| k.grid_export_kwh),
    ("peak_import_kw", |k| k.peak_import_kw),
    ("community_cost", |k| k.community_cost),
    ("grid_only_cost", |k| k.grid_only_cost),
    ("p2p_kwh", |k| k.p2p_kwh),
    ("self_sufficiency_pct", |k| k.self_sufficiency_pct),
    ("self_consumption_pct", |k| k.self_consumption_pct),
    ("co2_kg", |k| k.co2_kg),
    ("battery_cycles", |k| k.battery_cycles),
    ("gini_savings", |k| k.gini_savings),
    ("p2p_losses_kwh", |k| k.p2p_losses_kwh),
    ("battery_losses_kwh", |k| k.battery_losses_kwh),
    ("ev_shortfall_kwh", |k| k.ev_shortfall_kwh),
    ("overload_kwh", |k| k.overload_kwh),
    ("mean_reward", |k| k.mean_reward),
];

#[derive(Serialize)]
struct KpisDocument<'a> {
    format: &'static str,
    run: &'a RunInfo,
    community: CommunitySummary,
    held_out: HeldOutSummary,
    representative_day: &'a RepresentativeDay,
    policies: Vec<PolicyRow<'a>>,
    /// The learned policy's share of the rule-based → optimum cost gap, %.
    gap_closed_pct: Option<f64>,
    optimum: Option<&'a OptimumReport>,
    optimum_skipped: Option<&'a str>,
    /// Present only when MPC was asked for (`run.mpc`), so a run without it
    /// writes the same bytes as before MPC existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    mpc: Option<&'a MpcReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpc_gap_closed_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpc_skipped: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast_errors: Option<&'a ForecastErrors>,
    learning_curve: &'a [LearningPoint],
}

#[derive(Serialize)]
struct CommunitySummary {
    households: usize,
    by_kind: BTreeMap<&'static str, usize>,
    storage_kwh: f64,
}

#[derive(Serialize)]
struct HeldOutSummary {
    /// Held-out day numbers evaluated, in play order.
    days: Vec<usize>,
    slots: usize,
}

#[derive(Serialize)]
struct PolicyRow<'a> {
    policy: &'a str,
    kpis: &'a Kpis,
}

pub(super) fn community_summary(
    scenario: &EvalScenario,
) -> (usize, BTreeMap<&'static str, usize>, f64) {
    let mut by_kind = BTreeMap::new();
    for p in &scenario.prosumers {
        *by_kind.entry(p.kind.name()).or_insert(0) += 1;
    }
    let storage = scenario.prosumers.iter().filter_map(|p| p.battery.map(|b| b.capacity_kwh)).sum();
    (scenario.prosumers.len(), by_kind, storage)
}

pub(super) fn kpis_json(
    info: &RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
    day: &RepresentativeDay,
    curve: &[LearningPoint],
) -> Result<String, EvalError> {
    let (households, by_kind, storage_kwh) = community_summary(scenario);
    let doc = KpisDocument {
        format: KPIS_FORMAT,
        run: info,
        community: CommunitySummary { households, by_kind, storage_kwh },
        held_out: HeldOutSummary {
            days: scenario.days.iter().map(|d| d.number).collect(),
            slots: scenario.slots().len(),
        },
        representative_day: day,
        policies: evaluation
            .rows
            .iter()
            .map(|r| PolicyRow { policy: &r.policy, kpis: &r.kpis })
            .collect(),
        gap_closed_pct: evaluation.gap_closed_pct(),
        optimum: evaluation.optimum.as_ref(),
        optimum_skipped: evaluation.optimum_skipped.as_deref(),
        mpc: evaluation.mpc.as_ref(),
        mpc_gap_closed_pct: evaluation.gap_closed_by_pct(MPC),
        mpc_skipped: evaluation.mpc_skipped.as_deref(),
        forecast_errors: evaluation.forecast_errors.as_ref(),
        learning_curve: curve,
    };
    let mut text = serde_json::to_string_pretty(&doc)
        .map_err(|e| EvalError::invalid("kpis.json", e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// `demand_charge`: a column of `kpis.csv` only when some row pays one (so
/// a tariff without one writes the file it always did).
const DEMAND_CHARGE_FIELD: KpiField = ("demand_charge", |k| k.demand_charge);

pub(super) fn kpis_csv(evaluation: &Evaluation) -> Result<String, EvalError> {
    let csv_error = |e: csv::Error| EvalError::invalid("kpis.csv", e.to_string());
    let mut fields = KPI_FIELDS.to_vec();
    if evaluation.rows.iter().any(|r| r.kpis.demand_charge != 0.0) {
        fields.push(DEMAND_CHARGE_FIELD);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(std::iter::once("policy").chain(fields.iter().map(|(name, _)| *name)))
        .map_err(csv_error)?;
    for r in &evaluation.rows {
        let values = fields.iter().map(|(_, get)| get(&r.kpis).to_string());
        w.write_record(std::iter::once(r.policy.clone()).chain(values)).map_err(csv_error)?;
    }
    let bytes = w.into_inner().map_err(|e| EvalError::invalid("kpis.csv", e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| EvalError::invalid("kpis.csv", e.to_string()))
}

/// Columns of `slots.csv` after `policy`: the fields of a `SlotRecord`.
pub(super) const SLOT_FIELDS: [&str; 16] = [
    "data_slot",
    "hour",
    "load_kwh",
    "pv_kwh",
    "battery_charged_kwh",
    "battery_discharged_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "p2p_kwh",
    "p2p_losses_kwh",
    "p2p_paid",
    "p2p_received",
    "stored_kwh",
    "clearing_price_per_kwh",
    "retail_per_kwh",
    "feed_in_per_kwh",
];

/// Every slot of every policy, community totals (`clearing_price_per_kwh`
/// empty where the auction did not clear, and always for the optimum).
pub(super) fn slots_csv(evaluation: &Evaluation) -> Result<String, EvalError> {
    let csv_error = |e: csv::Error| EvalError::invalid("slots.csv", e.to_string());
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(std::iter::once("policy").chain(SLOT_FIELDS)).map_err(csv_error)?;
    for row in &evaluation.rows {
        for r in &row.records {
            let numbers = [
                r.load_kwh,
                r.pv_kwh,
                r.battery_charged_kwh,
                r.battery_discharged_kwh,
                r.grid_import_kwh,
                r.grid_export_kwh,
                r.p2p_kwh,
                r.p2p_losses_kwh,
                r.p2p_paid,
                r.p2p_received,
                r.stored_kwh,
            ];
            let mut record = vec![row.policy.clone(), r.data_slot.to_string(), r.hour.to_string()];
            record.extend(numbers.iter().map(f64::to_string));
            record.push(r.clearing_price_per_kwh.map_or(String::new(), |p| p.to_string()));
            record.push(r.retail_per_kwh.to_string());
            record.push(r.feed_in_per_kwh.to_string());
            w.write_record(&record).map_err(csv_error)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| EvalError::invalid("slots.csv", e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| EvalError::invalid("slots.csv", e.to_string()))
}

/// `{"community": …, "sim": …}` as `--scenario` reads it. A feeder without
/// a limit (infinite) is left out, which is how the file format says "none".
pub(super) fn config_json(
    community: &CommunityConfig,
    sim: &SimConfig,
) -> Result<String, EvalError> {
    let json_error = |e: serde_json::Error| EvalError::invalid("config.json", e.to_string());
    let mut sim = serde_json::to_value(sim).map_err(json_error)?;
    if let Some(grid) = sim.get_mut("grid").and_then(|g| g.as_object_mut()) {
        grid.retain(|_, v| !v.is_null());
    }
    let doc = serde_json::json!({ "community": community, "sim": sim });
    let mut text = serde_json::to_string_pretty(&doc).map_err(json_error)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::tariff::GridConfig;

    #[test]
    fn config_round_trips_without_infinite_limits() {
        let sim = SimConfig {
            grid: GridConfig { feeder_export_limit_kw: 50.0, ..GridConfig::default() },
            ..SimConfig::default()
        };
        let text = config_json(&CommunityConfig::default(), &sim).unwrap();
        assert!(
            !text.contains("feeder_import_limit_kw")
                && text.contains("\"feeder_export_limit_kw\": 50.0"),
            "{text}"
        );
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Back {
            community: CommunityConfig,
            sim: SimConfig,
        }
        let back: Back = serde_json::from_str(&text).unwrap();
        assert_eq!((back.community, back.sim), (CommunityConfig::default(), sim));
    }
}
