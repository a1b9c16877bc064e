//! Evaluating policies side by side on the same community and slots.
//!
//! A grid-only run comes first: its per-household bills are the reference
//! for every policy's savings (Gini, `grid_only_cost`), so all rows of an
//! evaluation share one baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::Dataset;
use crate::error::CoreError;
use crate::kpi::Kpis;
use crate::policy::{GridOnly, Policy};
use crate::prosumer::ProsumerSpec;
use crate::simulation::{SimConfig, Simulation, SlotRecord};

/// One policy's result.
#[derive(Clone, Debug)]
pub struct PolicyResult {
    /// The policy's name.
    pub policy: String,
    /// The KPIs of its run.
    pub kpis: Kpis,
    /// Per-slot community records (for plots).
    pub records: Vec<SlotRecord>,
    /// Wall-clock time of its run (a measurement, not a result).
    pub elapsed: Duration,
}

/// Plays `slots` of `ds` with each policy (after a grid-only reference run)
/// and returns one result per policy, in order.
pub fn evaluate(
    ds: &Arc<Dataset>,
    prosumers: &[ProsumerSpec],
    cfg: &SimConfig,
    slots: &[usize],
    policies: &mut [&mut dyn Policy],
) -> Result<Vec<PolicyResult>, CoreError> {
    let mut reference =
        Simulation::new(ds.clone(), prosumers.to_vec(), cfg.clone(), slots.to_vec())?;
    reference.run(&mut GridOnly);
    let baseline = reference.household_costs().to_vec();
    let mut out = Vec::with_capacity(policies.len());
    for policy in policies.iter_mut() {
        // A measurement only: `elapsed` is reported beside the KPIs, never
        // an input to them.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let mut sim = Simulation::new(ds.clone(), prosumers.to_vec(), cfg.clone(), slots.to_vec())?
            .with_slot_records()
            .with_baseline_costs(baseline.clone())?;
        let kpis = sim.run(&mut **policy);
        out.push(PolicyResult {
            policy: policy.name().to_string(),
            kpis,
            records: sim.records().to_vec(),
            elapsed: started.elapsed(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleBased;
    use crate::prosumer::tests::tiny_dataset;
    use crate::prosumer::{generate_community, CommunityConfig};

    #[test]
    fn grid_only_has_zero_savings_and_shares_the_baseline() {
        let ds = Arc::new(tiny_dataset());
        let prosumers =
            generate_community(&ds, &CommunityConfig { n_prosumers: 20, ..Default::default() })
                .unwrap();
        let slots: Vec<usize> = (0..ds.n_slots()).collect();
        let r = evaluate(
            &ds,
            &prosumers,
            &SimConfig::default(),
            &slots,
            &mut [&mut GridOnly, &mut RuleBased],
        )
        .unwrap();
        assert_eq!(r[0].kpis.gini_savings, 0.0);
        assert!((r[0].kpis.community_cost - r[0].kpis.grid_only_cost).abs() < 1e-9);
        assert_eq!(r[0].kpis.grid_only_cost, r[1].kpis.grid_only_cost);
        assert!(r[1].kpis.community_cost < r[1].kpis.grid_only_cost);
        assert_eq!(r[1].records.len(), slots.len());
    }
}
