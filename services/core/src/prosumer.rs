//! Prosumer profiles and the seeded community generator.
//!
//! A [`ProsumerSpec`] is everything static about a household: what it has
//! (PV, a home battery, an EV with its plug-in window) and where its load and
//! PV come from ([`TraceRef`]: a measured home of a [`Dataset`], scaled,
//! shifted and with seeded noise). Communities of any size are generated from
//! a handful of measured homes without copying their series, so 100,000
//! prosumers cost a few megabytes.

use serde::{Deserialize, Serialize};

use crate::battery::BatterySpec;
use crate::data::Dataset;
use crate::error::CoreError;
use crate::rng::{derive_seed, hash_unit, SeededRng};
use crate::units::ProsumerId;

/// What a household owns, which decides its equipment and its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProsumerKind {
    /// Rooftop PV and a home battery.
    PvBattery,
    /// Rooftop PV, no storage.
    PvOnly,
    /// Neither PV nor storage.
    Consumer,
    /// PV and an electric vehicle whose battery is usable only while plugged in.
    Ev,
}

impl ProsumerKind {
    /// Every kind, in the order of [`CommunityConfig`]'s shares.
    pub const ALL: [ProsumerKind; 4] =
        [ProsumerKind::PvBattery, ProsumerKind::PvOnly, ProsumerKind::Consumer, ProsumerKind::Ev];

    /// The kind's name in configs, files and on the wire (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            ProsumerKind::PvBattery => "pv-battery",
            ProsumerKind::PvOnly => "pv-only",
            ProsumerKind::Consumer => "consumer",
            ProsumerKind::Ev => "ev",
        }
    }
}

/// An EV's daily routine: it leaves at `depart_hour` with at least
/// `departure_soc`, drives `trip_kwh`, and is plugged in again at `arrive_hour`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvSpec {
    /// Hour of day (0..=23) the EV is plugged in again.
    pub arrive_hour: u8,
    /// Hour of day (0..=23) the EV leaves.
    pub depart_hour: u8,
    /// Energy used while away, removed from the battery on arrival.
    pub trip_kwh: f64,
    /// Required SoC (fraction of capacity) at departure.
    pub departure_soc: f64,
}

impl EvSpec {
    /// Whether the EV is plugged in during the slot starting at `hour`.
    /// The window wraps around midnight when `arrive_hour > depart_hour`.
    pub fn plugged_in(&self, hour: u8) -> bool {
        if self.arrive_hour > self.depart_hour {
            hour >= self.arrive_hour || hour < self.depart_hour
        } else {
            hour >= self.arrive_hour && hour < self.depart_hour
        }
    }

    /// Checks the hours, the trip and the departure SoC; errors name `field`.
    pub fn validate(&self, field: &str) -> Result<(), CoreError> {
        if self.arrive_hour > 23 || self.depart_hour > 23 || self.arrive_hour == self.depart_hour {
            return Err(CoreError::invalid(
                format!("{field}.arrive_hour"),
                format!(
                    "arrive {} and depart {} must be distinct hours in 0..=23",
                    self.arrive_hour, self.depart_hour
                ),
            ));
        }
        if !self.trip_kwh.is_finite() || self.trip_kwh < 0.0 {
            return Err(CoreError::invalid(
                format!("{field}.trip_kwh"),
                format!("must be finite and ≥ 0, got {}", self.trip_kwh),
            ));
        }
        if !(0.0..=1.0).contains(&self.departure_soc) {
            return Err(CoreError::invalid(
                format!("{field}.departure_soc"),
                format!("must lie in [0, 1], got {}", self.departure_soc),
            ));
        }
        Ok(())
    }
}

/// Where a prosumer's load and PV come from: a measured home of the dataset,
/// scaled, circularly shifted by whole slots, with multiplicative noise that
/// is a pure function of `(noise_seed, slot)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRef {
    /// Index of the measured home in the dataset.
    pub home: u32,
    /// Factor applied to the home's load.
    pub load_scale: f32,
    /// Installed PV, kWp (0 = none).
    pub pv_kwp: f32,
    /// Slots the home's series is shifted forward (circularly).
    pub shift_slots: u32,
    /// Relative standard deviation of the load noise.
    pub noise_sigma: f32,
    /// Seed of the load noise: the noise of a slot is a pure function of it and the slot.
    pub noise_seed: u64,
}

impl TraceRef {
    #[inline]
    fn index(&self, ds: &Dataset, slot: usize) -> usize {
        (slot + self.shift_slots as usize) % ds.n_slots()
    }

    /// Load of `slot`, kWh (≥ 0).
    #[inline]
    pub fn load_kwh(&self, ds: &Dataset, slot: usize) -> f64 {
        let base = ds.homes[self.home as usize].load_kwh[self.index(ds, slot)] as f64
            * self.load_scale as f64;
        if self.noise_sigma == 0.0 {
            return base;
        }
        // Uniform noise with the configured standard deviation: cheap, bounded, reproducible.
        let u = hash_unit(self.noise_seed, slot as u64) - 0.5;
        (base * (1.0 + self.noise_sigma as f64 * u * 12f64.sqrt())).max(0.0)
    }

    /// PV generation of `slot`, kWh (≥ 0).
    #[inline]
    pub fn pv_kwh(&self, ds: &Dataset, slot: usize) -> f64 {
        if self.pv_kwp == 0.0 {
            return 0.0;
        }
        ds.homes[self.home as usize].pv_kwh_per_kwp[self.index(ds, slot)] as f64
            * self.pv_kwp as f64
    }
}

/// Everything static about one household.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProsumerSpec {
    /// Dense id within the community.
    pub id: ProsumerId,
    /// What the household owns.
    pub kind: ProsumerKind,
    /// Where its load and PV come from.
    pub trace: TraceRef,
    /// Home battery, or the EV's battery for [`ProsumerKind::Ev`].
    pub battery: Option<BatterySpec>,
    /// The EV's routine, for [`ProsumerKind::Ev`].
    pub ev: Option<EvSpec>,
    /// Initial SoC as a fraction of capacity.
    pub initial_soc: f64,
}

impl ProsumerSpec {
    /// Checks the trace against `ds` and every part of the spec; errors name `prosumers[id]`.
    pub fn validate(&self, ds: &Dataset) -> Result<(), CoreError> {
        let field = format!("prosumers[{}]", self.id);
        if self.trace.home as usize >= ds.homes.len() {
            return Err(CoreError::invalid(
                format!("{field}.trace.home"),
                format!(
                    "{} is not a home of dataset '{}' (it has {})",
                    self.trace.home,
                    ds.name,
                    ds.homes.len()
                ),
            ));
        }
        if !(self.trace.load_scale.is_finite()
            && self.trace.load_scale >= 0.0
            && self.trace.pv_kwp.is_finite()
            && self.trace.pv_kwp >= 0.0)
        {
            return Err(CoreError::invalid(
                format!("{field}.trace"),
                "load_scale and pv_kwp must be finite and ≥ 0",
            ));
        }
        if let Some(b) = &self.battery {
            b.validate(&format!("{field}.battery"))?;
        }
        if let Some(ev) = &self.ev {
            ev.validate(&format!("{field}.ev"))?;
            if self.battery.is_none() {
                return Err(CoreError::invalid(
                    format!("{field}.battery"),
                    "an EV needs a battery",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.initial_soc) {
            return Err(CoreError::invalid(
                format!("{field}.initial_soc"),
                format!("must lie in [0, 1], got {}", self.initial_soc),
            ));
        }
        Ok(())
    }
}

/// Shares of each kind and the ranges the generator samples from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommunityConfig {
    /// Households in the community.
    pub n_prosumers: usize,
    /// Share of PV + home battery households.
    pub share_pv_battery: f64,
    /// Share of PV-only households.
    pub share_pv_only: f64,
    /// Share of PV + EV households; the rest are consumers.
    pub share_ev: f64,
    /// Range of the load scale factor, `[min, max]`.
    pub load_scale_range: [f64; 2],
    /// Range of installed PV, kWp, `[min, max]`.
    pub pv_kwp_range: [f64; 2],
    /// Home battery sizes to pick from, kWh.
    pub battery_kwh_choices: Vec<f64>,
    /// Battery of every EV, kWh.
    pub ev_battery_kwh: f64,
    /// Charge and discharge power of every EV, kW.
    pub ev_charge_kw: f64,
    /// Largest time shift of a home's series, slots, either way.
    pub max_shift_slots: u32,
    /// Relative standard deviation of the load noise.
    pub noise_sigma: f64,
    /// Seed of the generator; each prosumer's noise stream derives from it.
    pub seed: u64,
}

impl Default for CommunityConfig {
    fn default() -> Self {
        CommunityConfig {
            n_prosumers: 24,
            share_pv_battery: 0.4,
            share_pv_only: 0.2,
            share_ev: 0.15,
            load_scale_range: [0.7, 1.3],
            pv_kwp_range: [3.0, 7.0],
            battery_kwh_choices: vec![6.4, 10.0, 13.5],
            ev_battery_kwh: 40.0,
            ev_charge_kw: 7.0,
            max_shift_slots: 1,
            noise_sigma: 0.1,
            seed: 1,
        }
    }
}

impl CommunityConfig {
    /// Checks the counts, shares and ranges; errors name `community.<field>`.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.n_prosumers == 0 || self.n_prosumers > 10_000_000 {
            return Err(CoreError::invalid(
                "community.n_prosumers",
                format!("must lie in 1..=10000000, got {}", self.n_prosumers),
            ));
        }
        let shares = [
            ("community.share_pv_battery", self.share_pv_battery),
            ("community.share_pv_only", self.share_pv_only),
            ("community.share_ev", self.share_ev),
        ];
        for (field, s) in shares {
            if !(0.0..=1.0).contains(&s) {
                return Err(CoreError::invalid(field, format!("must lie in [0, 1], got {s}")));
            }
        }
        let total = self.share_pv_battery + self.share_pv_only + self.share_ev;
        if total > 1.0 + 1e-9 {
            return Err(CoreError::invalid(
                "community.share_*",
                format!("shares sum to {total} > 1"),
            ));
        }
        for (field, r) in [
            ("community.load_scale_range", self.load_scale_range),
            ("community.pv_kwp_range", self.pv_kwp_range),
        ] {
            if !(r[0].is_finite()
                && r[1].is_finite()
                && 0.0 <= r[0]
                && r[0] <= r[1]
                && r[1] <= 1000.0)
            {
                return Err(CoreError::invalid(
                    field,
                    format!("must satisfy 0 ≤ lo ≤ hi ≤ 1000, got {r:?}"),
                ));
            }
        }
        if self.battery_kwh_choices.is_empty()
            || self.battery_kwh_choices.iter().any(|c| !c.is_finite() || *c <= 0.0 || *c > 1000.0)
        {
            return Err(CoreError::invalid(
                "community.battery_kwh_choices",
                "needs at least one size in (0, 1000] kWh",
            ));
        }
        if !(self.ev_battery_kwh > 0.0
            && self.ev_battery_kwh <= 1000.0
            && self.ev_charge_kw > 0.0
            && self.ev_charge_kw <= 1000.0)
        {
            return Err(CoreError::invalid(
                "community.ev_battery_kwh",
                "EV battery and charge power must lie in (0, 1000]",
            ));
        }
        if !(0.0..=1.0).contains(&self.noise_sigma) {
            return Err(CoreError::invalid(
                "community.noise_sigma",
                format!("must lie in [0, 1], got {}", self.noise_sigma),
            ));
        }
        Ok(())
    }

    /// The kind of prosumer `id`. Kinds follow a golden-ratio low-discrepancy
    /// sequence (offset by the seed) over the cumulative shares, so every
    /// prefix `0..n` of ids has each kind within one or two of its exact share,
    /// and a prosumer's kind does not depend on how many others exist: an
    /// agent-node can generate just its own id range.
    pub fn kind_of(&self, id: ProsumerId) -> ProsumerKind {
        const PHI_FRAC: f64 = 0.618_033_988_749_894_9;
        let offset = crate::rng::hash_unit(derive_seed(self.seed, "kinds"), 0);
        let u = (offset + id as f64 * PHI_FRAC).fract();
        let mut edge = self.share_pv_battery;
        if u < edge {
            return ProsumerKind::PvBattery;
        }
        edge += self.share_pv_only;
        if u < edge {
            return ProsumerKind::PvOnly;
        }
        edge += self.share_ev;
        if u < edge {
            return ProsumerKind::Ev;
        }
        ProsumerKind::Consumer
    }
}

/// Generates the community `0..cfg.n_prosumers` (see [`generate_prosumer`]).
pub fn generate_community(
    ds: &Dataset,
    cfg: &CommunityConfig,
) -> Result<Vec<ProsumerSpec>, CoreError> {
    generate_range(ds, cfg, 0, cfg.n_prosumers as u32)
}

/// Generates prosumers `first..first + count`: exactly what
/// [`generate_community`] would give for those ids, whatever the community size.
pub fn generate_range(
    ds: &Dataset,
    cfg: &CommunityConfig,
    first: ProsumerId,
    count: u32,
) -> Result<Vec<ProsumerSpec>, CoreError> {
    cfg.validate()?;
    if ds.homes.is_empty() || ds.n_slots() == 0 {
        return Err(CoreError::invalid(
            "dataset",
            format!("'{}' has no homes or no slots", ds.name),
        ));
    }
    let end = first
        .checked_add(count)
        .ok_or_else(|| CoreError::invalid("prosumer ids", "range overflows u32"))?;
    let with_pv = homes_with_pv(ds);
    Ok((first..end).map(|id| prosumer_from_pool(ds, cfg, id, &with_pv)).collect())
}

/// Homes of `ds` that have PV: the traces PV-owning prosumers draw from.
fn homes_with_pv(ds: &Dataset) -> Vec<u32> {
    (0..ds.homes.len() as u32).filter(|&h| ds.homes[h as usize].pv_kwp > 0.0).collect()
}

/// Generates prosumer `id`: its kind ([`CommunityConfig::kind_of`]), a measured
/// home (homes without PV only back consumers when possible), a load scale, a
/// PV size, a battery or an EV, a small time shift and a noise stream, all
/// from a random stream of its own. Same dataset, config and id ⇒ same prosumer.
/// `cfg` and `ds` must be valid (see [`generate_range`]).
pub fn generate_prosumer(ds: &Dataset, cfg: &CommunityConfig, id: ProsumerId) -> ProsumerSpec {
    prosumer_from_pool(ds, cfg, id, &homes_with_pv(ds))
}

/// [`generate_prosumer`] with the PV homes of `ds` computed once by the caller.
fn prosumer_from_pool(
    ds: &Dataset,
    cfg: &CommunityConfig,
    id: ProsumerId,
    with_pv: &[u32],
) -> ProsumerSpec {
    let mut rng = SeededRng::new(derive_seed(cfg.seed, &format!("prosumer/{id}")));
    let kind = cfg.kind_of(id);
    let has_pv = kind != ProsumerKind::Consumer;
    let home = if has_pv && !with_pv.is_empty() {
        with_pv[rng.below(with_pv.len() as u64) as usize]
    } else {
        rng.below(ds.homes.len() as u64) as u32
    };
    let pv_kwp = if has_pv { rng.uniform(cfg.pv_kwp_range[0], cfg.pv_kwp_range[1]) } else { 0.0 };
    let shift = if cfg.max_shift_slots > 0 {
        rng.below(2 * cfg.max_shift_slots as u64 + 1) as u32
    } else {
        0
    };
    let trace = TraceRef {
        home,
        load_scale: rng.uniform(cfg.load_scale_range[0], cfg.load_scale_range[1]) as f32,
        pv_kwp: pv_kwp as f32,
        // A shift of s slots back is n − s forward on the circular series.
        shift_slots: (ds.n_slots() as u32 + shift).saturating_sub(cfg.max_shift_slots)
            % ds.n_slots() as u32,
        noise_sigma: cfg.noise_sigma as f32,
        noise_seed: derive_seed(cfg.seed, &format!("noise/{id}")),
    };
    let (battery, ev) = match kind {
        ProsumerKind::PvBattery => {
            let cap =
                cfg.battery_kwh_choices[rng.below(cfg.battery_kwh_choices.len() as u64) as usize];
            (Some(BatterySpec::home(cap)), None)
        }
        ProsumerKind::Ev => {
            let battery = BatterySpec {
                capacity_kwh: cfg.ev_battery_kwh,
                max_charge_kw: cfg.ev_charge_kw,
                max_discharge_kw: cfg.ev_charge_kw,
                round_trip_efficiency: 0.88,
                soc_min: 0.2,
                soc_max: 0.95,
                degradation_cost_per_kwh: 0.02,
            };
            let ev = EvSpec {
                arrive_hour: 17 + rng.below(3) as u8,
                depart_hour: 7 + rng.below(2) as u8,
                trip_kwh: rng.uniform(4.0, 12.0),
                departure_soc: 0.6,
            };
            (Some(battery), Some(ev))
        }
        ProsumerKind::PvOnly | ProsumerKind::Consumer => (None, None),
    };
    ProsumerSpec { id, kind, trace, battery, ev, initial_soc: 0.5 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::HomeSeries;

    /// A tiny two-home dataset, 2 days of hourly data: home 0 has PV, home 1 has none.
    pub(crate) fn tiny_dataset() -> Dataset {
        let hours = 48;
        let load: Vec<f32> = (0..hours)
            .map(|h| 0.5 + if (h % 24) >= 17 && (h % 24) < 22 { 1.0 } else { 0.0 })
            .collect();
        let pv: Vec<f32> = (0..hours)
            .map(|h| {
                let x = (h % 24) as f32;
                if (7.0..19.0).contains(&x) {
                    0.7 * (std::f32::consts::PI * (x - 7.0) / 12.0).sin()
                } else {
                    0.0
                }
            })
            .collect();
        Dataset {
            name: "tiny".into(),
            slot_minutes: 60,
            first_slot_of_day: 0,
            first_day_of_week: 0,
            homes: vec![
                HomeSeries {
                    name: "pv".into(),
                    load_kwh: load.clone(),
                    pv_kwh_per_kwp: pv,
                    pv_kwp: 4.0,
                },
                HomeSeries {
                    name: "nopv".into(),
                    load_kwh: load,
                    pv_kwh_per_kwp: vec![0.0; hours],
                    pv_kwp: 0.0,
                },
            ],
            carbon_kg_per_kwh: vec![],
            price_per_kwh: vec![],
        }
    }

    #[test]
    fn ev_window_wraps_midnight() {
        let ev = EvSpec { arrive_hour: 18, depart_hour: 7, trip_kwh: 8.0, departure_soc: 0.6 };
        assert!(ev.plugged_in(18) && ev.plugged_in(23) && ev.plugged_in(0) && ev.plugged_in(6));
        assert!(!ev.plugged_in(7) && !ev.plugged_in(12) && !ev.plugged_in(17));
        let day = EvSpec { arrive_hour: 9, depart_hour: 17, ..ev };
        assert!(day.plugged_in(9) && !day.plugged_in(17) && !day.plugged_in(3));
    }

    #[test]
    fn community_has_near_exact_shares_and_is_deterministic() {
        let ds = tiny_dataset();
        let cfg = CommunityConfig {
            n_prosumers: 20,
            share_pv_battery: 0.5,
            share_pv_only: 0.25,
            share_ev: 0.1,
            ..Default::default()
        };
        let a = generate_community(&ds, &cfg).unwrap();
        let b = generate_community(&ds, &cfg).unwrap();
        assert_eq!(a, b);
        for n in [20usize, 24, 100, 1000] {
            let c = generate_community(&ds, &CommunityConfig { n_prosumers: n, ..cfg.clone() })
                .unwrap();
            let count = |k| c.iter().filter(|p| p.kind == k).count() as f64;
            let shares = [
                (ProsumerKind::PvBattery, 0.5),
                (ProsumerKind::PvOnly, 0.25),
                (ProsumerKind::Ev, 0.1),
                (ProsumerKind::Consumer, 0.15),
            ];
            for (k, share) in shares {
                assert!(
                    (count(k) - share * n as f64).abs() <= 2.0,
                    "{n} prosumers: {} {k:?} for share {share}",
                    count(k)
                );
            }
        }
        for p in &a {
            p.validate(&ds).unwrap();
            assert_eq!(p.kind == ProsumerKind::Consumer, p.trace.pv_kwp == 0.0);
            assert_eq!(
                p.battery.is_some(),
                matches!(p.kind, ProsumerKind::PvBattery | ProsumerKind::Ev)
            );
            if p.kind != ProsumerKind::Consumer {
                assert_eq!(p.trace.home, 0, "PV prosumers must use homes with PV");
            }
        }
        let other = generate_community(&ds, &CommunityConfig { seed: 2, ..cfg }).unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn a_range_is_the_same_slice_of_any_community() {
        let ds = tiny_dataset();
        let cfg = CommunityConfig { n_prosumers: 16, seed: 9, ..Default::default() };
        let all = generate_community(&ds, &cfg).unwrap();
        let second_half =
            generate_range(&ds, &CommunityConfig { n_prosumers: 1, ..cfg.clone() }, 8, 8).unwrap();
        assert_eq!(&all[8..], &second_half[..]);
        let bigger = generate_community(&ds, &CommunityConfig { n_prosumers: 40, ..cfg }).unwrap();
        assert_eq!(&bigger[..16], &all[..]);
    }

    #[test]
    fn traces_are_non_negative_and_pv_is_zero_at_night() {
        let ds = tiny_dataset();
        let cfg = CommunityConfig {
            n_prosumers: 50,
            max_shift_slots: 0,
            noise_sigma: 0.5,
            ..Default::default()
        };
        for p in generate_community(&ds, &cfg).unwrap() {
            for t in 0..ds.n_slots() {
                assert!(p.trace.load_kwh(&ds, t) >= 0.0);
                let pv = p.trace.pv_kwh(&ds, t);
                assert!(pv >= 0.0);
                if t % 24 < 7 || t % 24 >= 19 {
                    assert_eq!(pv, 0.0);
                }
            }
        }
    }

    #[test]
    fn bad_config_names_the_field() {
        let ds = tiny_dataset();
        let cfg =
            CommunityConfig { share_pv_battery: 0.9, share_pv_only: 0.3, ..Default::default() };
        assert!(generate_community(&ds, &cfg).unwrap_err().to_string().contains("shares sum"));
        let cfg = CommunityConfig { n_prosumers: 0, ..Default::default() };
        assert!(generate_community(&ds, &cfg)
            .unwrap_err()
            .to_string()
            .contains("community.n_prosumers"));
    }
}
