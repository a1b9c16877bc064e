//! Golden behaviour of the reference simulator on the bundled measured data:
//! a 24-household community, seed 7, the first test week, every baseline.
//! Any change to physics, market, settlement, reward, KPIs, data or the
//! community generator shows up here as a readable diff.

use std::fmt::Write;
use std::sync::Arc;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::split::{split_weeks, WeekSplit};
use peergrid_core::evaluation::evaluate;
use peergrid_core::policy::{GridOnly, RuleBased};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{schedule, SimConfig};
use peergrid_e2e::assert_golden;

#[test]
fn reference_kpis_on_bundled_data() {
    let ds = Arc::new(bundled_citylearn().unwrap());
    let split = split_weeks(&ds, &WeekSplit::default());
    let slots = schedule(&split.test[..1]);
    let community = generate_community(
        &ds,
        &CommunityConfig { n_prosumers: 24, seed: 7, ..Default::default() },
    )
    .unwrap();
    let mut out = String::new();
    writeln!(
        out,
        "dataset {} | {} households | seed 7 | slots {}..{}",
        ds.name,
        community.len(),
        slots[0],
        slots[slots.len() - 1] + 1
    )
    .unwrap();
    let results = evaluate(
        &ds,
        &community,
        &SimConfig::default(),
        &slots,
        &mut [&mut GridOnly, &mut RuleBased],
    )
    .unwrap();
    for r in results {
        writeln!(out, "\n[{}]", r.policy).unwrap();
        let value = serde_json::to_value(&r.kpis).unwrap();
        for (key, v) in value.as_object().unwrap() {
            match v.as_f64() {
                Some(x) if v.is_f64() => writeln!(out, "{key:<22} {x:.6}").unwrap(),
                _ => writeln!(out, "{key:<22} {v}").unwrap(),
            }
        }
    }
    assert_golden("reference_kpis.txt", &out);
}
