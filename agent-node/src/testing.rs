//! Small fixtures shared by the unit tests and the actor benchmark: a seeded
//! synthetic community and the slot contexts the reference simulator would
//! open. Not part of the node's API.

use std::sync::Arc;

use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::data::Dataset;
use peergrid_core::observation::SlotContext;
use peergrid_core::prosumer::{generate_range, CommunityConfig, ProsumerSpec};
use peergrid_core::simulation::{slot_context, SimConfig};

/// A 6-home, 7-day hourly synthetic dataset and prosumers `0..n` of the
/// default community with `seed` (all four kinds appear from a dozen on).
pub fn small_community(n: u32, seed: u64) -> (Arc<Dataset>, Vec<ProsumerSpec>) {
    let ds = synthetic_dataset(6, 7, 60, seed);
    let cfg = CommunityConfig { n_prosumers: n as usize, seed, ..CommunityConfig::default() };
    let specs = generate_range(&ds, &cfg, 0, n).expect("valid community");
    (Arc::new(ds), specs)
}

/// The contexts of dataset slots `0..n` with the default tariff, as the
/// market opens them (the last clearing price varies a little so the
/// observation does too).
pub fn contexts(ds: &Dataset, n: usize) -> Vec<SlotContext> {
    let cfg = SimConfig::default();
    (0..n)
        .map(|t| {
            let price = (t % 3 != 0).then(|| cfg.tariff_of(ds, t).feed_in);
            slot_context(ds, &cfg, t % ds.n_slots(), price)
        })
        .collect()
}
