//! Test fixtures shared by the state's unit tests: a small market over a
//! synthetic dataset, nodes that register and join, reports with a given
//! position and order.

use std::sync::Arc;

use peergrid_core::battery::BatteryStep;
use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::household::HouseholdReport;
use peergrid_core::market::Side;
use peergrid_core::physics::Envelope;
use peergrid_core::prosumer::ProsumerKind;
use peergrid_core::safety::OrderIntent;
use peergrid_core::simulation::SimConfig;
use peergrid_core::units::{PricePerKwh, Wh};
use peergrid_proto::WireError;
use tonic::Code;

use super::{MarketState, NodeKey, ProsumerInfo, RegisterRequest, Registration};
use crate::config::MarketSettings;
use crate::error::MarketError;

/// The gRPC code a refusal leaves the market with (mapped at the edge).
pub(super) trait WireCode {
    fn code(&self) -> Code;
}

impl WireCode for MarketError {
    fn code(&self) -> Code {
        WireError::from(self.clone()).code()
    }
}

/// A market of at least 4 prosumers, nodes of at most 8.
pub(super) fn state() -> MarketState {
    let settings = MarketSettings {
        min_prosumers: 4,
        max_batch: 8,
        insecure_no_auth: true,
        ..MarketSettings::default()
    };
    state_with(&settings)
}

pub(super) fn state_with(settings: &MarketSettings) -> MarketState {
    let ds = Arc::new(synthetic_dataset(3, 2, 60, 1));
    MarketState::new(ds, SimConfig::default(), settings, 42).unwrap()
}

pub(super) const SECRET: &str = "00112233445566778899aabbccddeeff";

pub(super) fn reg(
    s: &mut MarketState,
    name: &str,
    count: u32,
) -> Result<Registration, MarketError> {
    s.register(
        RegisterRequest { name, prosumer_count: count, ..RegisterRequest::default() },
        SECRET.replace('0', "f"),
        0,
    )
}

pub(super) fn resume(
    s: &mut MarketState,
    name: &str,
    count: u32,
    session: &str,
    first: Option<u32>,
    secret: &str,
) -> Result<Registration, MarketError> {
    let request = RegisterRequest {
        name,
        prosumer_count: count,
        resume_session_id: session,
        resume_first_id: first,
        resume_secret: secret,
    };
    s.register(request, SECRET.into(), 0)
}

/// PV-only households with panels large enough for any test position.
pub(super) fn infos(first: u32, n: u32) -> Vec<ProsumerInfo> {
    (first..first + n)
        .map(|id| ProsumerInfo {
            prosumer_id: id,
            envelope: Envelope {
                kind: ProsumerKind::PvOnly,
                pv_kwp: 100.0,
                battery: None,
                ev: None,
            },
        })
        .collect()
}

/// A household with position `net_kwh` and an order for all of it.
pub(super) fn report(id: u32, net_kwh: f64, price: i64) -> HouseholdReport {
    let (load, pv) = if net_kwh > 0.0 { (net_kwh, 0.0) } else { (0.0, -net_kwh) };
    let side = if net_kwh > 0.0 { Side::Buy } else { Side::Sell };
    HouseholdReport {
        prosumer_id: id,
        load_kwh: load,
        pv_kwh: pv,
        net_kwh,
        battery: BatteryStep::default(),
        degradation_cost: 0.0,
        ev_shortfall_kwh: 0.0,
        stored_kwh: 0.0,
        order: Some(OrderIntent {
            side,
            quantity: Wh::floor_from_kwh(net_kwh.abs()),
            limit_price: PricePerKwh(price),
        }),
    }
}

/// Two nodes of two prosumers, joined, slot 0 open.
pub(super) fn two_nodes() -> (MarketState, NodeKey, NodeKey) {
    let mut s = state();
    let a = reg(&mut s, "a", 2).unwrap();
    let b = reg(&mut s, "b", 2).unwrap();
    assert_eq!((a.first_prosumer_id, b.first_prosumer_id), (0, 2));
    let ka = s.join(&a.session_id, &a.secret, &infos(0, 2), 0).unwrap();
    assert!(!s.may_open(), "2 of 4 min prosumers");
    let kb = s.join(&b.session_id, &b.secret, &infos(2, 2), 0).unwrap();
    assert!(s.may_open());
    s.open(0, 0);
    (s, ka, kb)
}
