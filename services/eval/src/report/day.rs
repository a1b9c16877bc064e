//! The representative held-out day a report plots: the day of median
//! community PV among those evaluated (ties go to the earlier day), so the
//! plots show a typical day rather than the sunniest or the darkest.

use std::ops::Range;

use peergrid_core::simulation::SlotRecord;
use serde::Serialize;

use crate::compare::EvalScenario;
use crate::days::HeldOutDay;
use crate::error::EvalError;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RepresentativeDay {
    pub day: HeldOutDay,
    /// Community PV generation that day, kWh.
    pub pv_kwh: f64,
    /// Its records within any policy's per-slot records.
    #[serde(skip)]
    pub records: Range<usize>,
}

/// Picks the day from `records`, one per slot of `scenario.days` in order.
pub fn representative_day(
    scenario: &EvalScenario,
    records: &[SlotRecord],
) -> Result<RepresentativeDay, EvalError> {
    let per_day = scenario.ds.slots_per_day() as usize;
    let n = scenario.days.len();
    if n == 0 || records.len() != n * per_day {
        return Err(EvalError::invalid(
            "records",
            format!("need {} slots ({n} days × {per_day}), got {}", n * per_day, records.len()),
        ));
    }
    let pv: Vec<f64> =
        records.chunks(per_day).map(|day| day.iter().map(|r| r.pv_kwh).sum()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| pv[*a].total_cmp(&pv[*b]).then(a.cmp(b)));
    let j = order[(n - 1) / 2];
    Ok(RepresentativeDay {
        day: scenario.days[j].clone(),
        pv_kwh: pv[j],
        records: j * per_day..(j + 1) * per_day,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::data::synthetic::synthetic_dataset;
    use peergrid_core::simulation::SimConfig;
    use std::sync::Arc;

    #[test]
    fn picks_the_median_pv_day() {
        let ds = Arc::new(synthetic_dataset(1, 3, 60, 1));
        let days = (0..3)
            .map(|d| HeldOutDay { number: d + 1, slots: d * 24..d * 24 + 24, weekday: d as u32 })
            .collect();
        let scenario = EvalScenario { ds, prosumers: vec![], sim: SimConfig::default(), days };
        let pv_per_day = [5.0, 1.0, 3.0];
        let records: Vec<SlotRecord> = (0..72)
            .map(|t| SlotRecord { pv_kwh: pv_per_day[t / 24] / 24.0, ..SlotRecord::default() })
            .collect();
        let d = representative_day(&scenario, &records).unwrap();
        assert_eq!((d.day.number, d.records.clone()), (3, 48..72));
        assert!((d.pv_kwh - 3.0).abs() < 1e-9);
        assert!(representative_day(&scenario, &records[..70])
            .unwrap_err()
            .to_string()
            .contains("need 72 slots"));
    }
}
