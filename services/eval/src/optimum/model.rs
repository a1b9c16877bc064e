//! The linear program of the perfect-foresight optimum, and of every window
//! the MPC baseline plans (`crate::mpc`), built from an [`LpInput`].
//!
//! Horizon: the schedule's slots `k = 0..T` in play order (held-out weeks
//! played back to back, as the simulator plays them), slot length `h` hours.
//! Known data: each household's load and PV (`b = load − PV`; forecasts
//! after the first slot for MPC), each slot's retail `r_k` and feed-in `f_k`
//! price, each battery's stored energy at the start.
//!
//! Per household `i` with a battery (home or EV), while it is available:
//!
//! ```text
//! c_ik ∈ [0, P_ch·h], d_ik ∈ [0, P_dis·h]   energy drawn from / delivered to the bus
//! s_ik = s_i,k−1 + √η·c_ik − d_ik/√η ∈ [SoC_min·E, SoC_max·E]   (s_i,−1 = initial SoC·E)
//! def_ik − sur_ik = b_ik + c_ik − d_ik, def, sur ≥ 0   its position after the battery
//! ```
//! An EV away from home has no `c, d`: its stored energy stays put and its
//! position is its fixed `b`. On departure its stored energy must reach
//! `min(departure SoC, SoC_max)·E` (the safety filter forces that charge in
//! the simulator); on arrival the trip energy leaves the battery, never
//! below `SoC_min·E`. Both get a non-negative slack penalised far above any
//! energy price, so the LP stays feasible for an EV that cannot physically
//! charge in time and uses the slack only then (reported as EV shortfall,
//! never counted as cost). Households without a battery, and EVs while
//! away, have fixed positions; `D_k`, `S_k` are the community's total
//! deficit and surplus (fixed parts plus `Σ def`, `Σ sur`).
//!
//! Per slot, `P_k ∈ [0, min(D_k, S_k)]` kWh are traded P2P: sellers deliver
//! `P_k`, buyers receive `(1 − loss)·P_k`, the rest goes through the grid:
//! `import = D_k − (1 − loss)·P_k`, `export = S_k − P_k` (exactly what
//! settlement does when every order is filled). P2P payments cancel inside
//! the community. Feeder overload `o_k ≥ ±(import − export) − limit·h` is
//! only modelled (and penalised) for a finite limit and a positive penalty.
//!
//! ```text
//! minimise Σ_k r_k·import_k − f_k·export_k + penalty·o_k + Σ_ik degradation_i·(c_ik + d_ik)
//!          (+ the EV slack penalties)
//! ```
//! which is `Kpis::community_cost`. Every trajectory the simulator can play
//! satisfies these constraints (the market and the safety filter only
//! restrict it further), so the optimum is a lower bound on any policy's
//! community cost. What the LP relaxes: simultaneous charge and discharge,
//! and a household both buying and selling, are not excluded (they only
//! waste energy, which pays off solely when a finite export limit makes
//! energy worth less than nothing; the bound stays valid), and P2P volume is
//! not tied to the auction's prices (all the community's gains from trade
//! are available to it).

use good_lp::{clarabel, variable, Expression, ProblemVariables, Solution, SolverModel, Variable};

use super::input::{BatteryInput, DemandInput, LpInput};
use super::{HouseholdPlan, LpSummary, OptimumPlan};
use crate::error::EvalError;

/// Values below this are solver noise (kWh).
const NOISE_KWH: f64 = 1e-9;

/// The LP, ready to solve, and what is needed to read its solution.
pub(crate) struct Lp {
    vars: ProblemVariables,
    constraints: Vec<good_lp::Constraint>,
    objective: Expression,
    households: Vec<HouseholdVars>,
    slots: Vec<SlotVars>,
    schedule: Vec<usize>,
    hours: f64,
    loss: f64,
    overload_penalty: f64,
    demand: Option<DemandVars>,
}

/// The demand charge's part of the LP: one peak variable per period of the
/// horizon, `peak ≥ net import / h` for each of its slots (and ≥ the peak
/// the first period already reached before the horizon).
struct DemandVars {
    per_kw: f64,
    /// Period of each slot.
    periods: Vec<u64>,
    peak_so_far_kw: f64,
}

/// One household's part of the LP.
struct HouseholdVars {
    /// Load − PV per schedule slot, kWh.
    net_kwh: Vec<f64>,
    battery: Option<BatteryVars>,
}

/// A battery the LP schedules (home or EV).
struct BatteryVars {
    initial_kwh: f64,
    one_way_efficiency: f64,
    degradation_per_kwh: f64,
    /// Per schedule slot; `None` while an EV is away.
    flows: Vec<Option<Flows>>,
    /// EV slack variables and the slot they belong to.
    shortfalls: Vec<(usize, Variable)>,
}

/// A battery household's variables in one slot, kWh.
#[derive(Clone, Copy)]
struct Flows {
    /// Drawn from the bus to charge.
    charge: Variable,
    /// Delivered to the bus.
    discharge: Variable,
    /// Stored at the end of the slot.
    stored: Variable,
    /// The household's position after the battery, split in two.
    deficit: Variable,
    surplus: Variable,
}

/// The community side of a slot.
#[derive(Default)]
struct SlotVars {
    retail: f64,
    feed_in: f64,
    /// Deficit and surplus of households whose position is fixed, kWh.
    fixed_deficit: f64,
    fixed_surplus: f64,
    deficits: Vec<Variable>,
    surpluses: Vec<Variable>,
    p2p: Option<Variable>,
    overloads: Vec<Variable>,
}

impl SlotVars {
    fn add_fixed(&mut self, net_kwh: f64) {
        self.fixed_deficit += net_kwh.max(0.0);
        self.fixed_surplus += (-net_kwh).max(0.0);
    }
}

fn sum(constant: f64, vars: &[Variable]) -> Expression {
    let mut e = Expression::with_capacity(vars.len());
    e += constant;
    for v in vars {
        e += *v;
    }
    e
}

/// Builds the LP of `input`.
pub(crate) fn build(input: LpInput) -> Lp {
    let LpInput {
        schedule,
        hours,
        hours_of_day,
        prices,
        households,
        max_degradation_per_kwh: max_degradation,
        grid,
        demand,
    } = input;
    let mut slots: Vec<SlotVars> = prices
        .iter()
        .map(|&(retail, feed_in)| SlotVars { retail, feed_in, ..SlotVars::default() })
        .collect();
    let max_retail = slots.iter().map(|s| s.retail).fold(0.0, f64::max);
    let mut lp = Lp {
        vars: ProblemVariables::new(),
        constraints: Vec::new(),
        objective: Expression::default(),
        households: Vec::with_capacity(households.len()),
        slots: Vec::new(),
        schedule,
        hours,
        loss: grid.p2p_loss_fraction,
        overload_penalty: grid.overload_penalty_per_kwh,
        demand: None,
    };
    // A kWh of EV shortfall must cost more than buying it at the dearest
    // price through a lossy battery, so the slack is used only when needed.
    let shortfall_penalty =
        10.0 * (max_retail + 2.0 * max_degradation + grid.overload_penalty_per_kwh) + 1.0;
    for h in households {
        let battery = match &h.battery {
            Some(b) => {
                Some(lp.add_battery(b, &h.net_kwh, &hours_of_day, shortfall_penalty, &mut slots))
            }
            None => {
                for (slot, n) in slots.iter_mut().zip(&h.net_kwh) {
                    slot.add_fixed(*n);
                }
                None
            }
        };
        lp.households.push(HouseholdVars { net_kwh: h.net_kwh, battery });
    }
    for slot in &mut slots {
        lp.add_community_slot(slot, grid.feeder_import_limit_kw, grid.feeder_export_limit_kw);
    }
    if let Some(d) = demand.filter(|d| d.per_kw > 0.0) {
        lp.add_demand_charge(&slots, &d);
        lp.demand = Some(DemandVars {
            per_kw: d.per_kw,
            periods: d.periods,
            peak_so_far_kw: d.peak_so_far_kw,
        });
    }
    lp.slots = slots;
    lp
}

impl Lp {
    /// The battery of household `p` over the horizon; `net[k]` is its load − PV.
    fn add_battery(
        &mut self,
        battery: &BatteryInput,
        net: &[f64],
        hours_of_day: &[u8],
        shortfall_penalty: f64,
        slots: &mut [SlotVars],
    ) -> BatteryVars {
        let spec = &battery.spec;
        let e = spec.one_way_efficiency();
        let (min_kwh, max_kwh) = (spec.min_stored_kwh(), spec.max_stored_kwh());
        let (max_charge, max_discharge) =
            (spec.max_charge_kw * self.hours, spec.max_discharge_kw * self.hours);
        let initial_kwh = battery.initial_kwh.clamp(min_kwh, max_kwh);
        let mut stored = Expression::from(initial_kwh);
        let plugged_in = |k: usize| battery.ev.is_none_or(|ev| ev.plugged_in(hours_of_day[k]));
        let mut was_plugged_in = battery.plugged_in_before;
        let mut flows = Vec::with_capacity(net.len());
        let mut shortfalls = Vec::new();
        for (k, slot) in slots.iter_mut().enumerate() {
            let available = plugged_in(k);
            if let Some(ev) = battery.ev {
                if was_plugged_in && !available {
                    let target = ev.departure_soc.min(spec.soc_max) * spec.capacity_kwh;
                    if target > min_kwh {
                        let slack = self.shortfall(f64::INFINITY, shortfall_penalty);
                        self.constraints.push((stored.clone() + slack).geq(target));
                        shortfalls.push((k, slack));
                    }
                } else if !was_plugged_in && available && ev.trip_kwh > 0.0 {
                    let slack = self.shortfall(ev.trip_kwh, shortfall_penalty);
                    stored = stored - ev.trip_kwh + slack;
                    self.constraints.push(stored.clone().geq(min_kwh));
                    shortfalls.push((k, slack));
                }
            }
            was_plugged_in = available;
            if !available {
                slot.add_fixed(net[k]);
                flows.push(None);
                continue;
            }
            let charge = self.vars.add(variable().min(0.0).max(max_charge));
            let discharge = self.vars.add(variable().min(0.0).max(max_discharge));
            let next = self.vars.add(variable().min(min_kwh).max(max_kwh));
            let mut dynamics = stored;
            dynamics.add_mul(e, charge);
            dynamics.add_mul(-1.0 / e, discharge);
            self.constraints.push(Expression::from(next).eq(dynamics));
            stored = next.into();
            // The position splits into a deficit and a surplus. The simulator
            // has deficit = (b + c − d)⁺ ≤ b⁺ + c and surplus ≤ b⁻ + d; saying
            // so keeps the LP from inflating both (a household buying and
            // selling at once) beyond what its battery moves, and bounds the
            // optimal face.
            let deficit = self.vars.add(variable().min(0.0));
            let surplus = self.vars.add(variable().min(0.0));
            self.constraints.push((deficit - surplus - charge + discharge).eq(net[k]));
            self.constraints.push((deficit - charge).leq(net[k].max(0.0)));
            self.constraints.push((surplus - discharge).leq((-net[k]).max(0.0)));
            self.objective.add_mul(spec.degradation_cost_per_kwh, charge);
            self.objective.add_mul(spec.degradation_cost_per_kwh, discharge);
            slot.deficits.push(deficit);
            slot.surpluses.push(surplus);
            flows.push(Some(Flows { charge, discharge, stored: next, deficit, surplus }));
        }
        BatteryVars {
            initial_kwh,
            one_way_efficiency: e,
            degradation_per_kwh: spec.degradation_cost_per_kwh,
            flows,
            shortfalls,
        }
    }

    fn shortfall(&mut self, max_kwh: f64, penalty: f64) -> Variable {
        let v = self.vars.add(variable().min(0.0).max(max_kwh));
        self.objective.add_mul(penalty, v);
        v
    }

    /// P2P volume, grid cost and feeder overload of one slot.
    fn add_community_slot(
        &mut self,
        slot: &mut SlotVars,
        import_limit_kw: f64,
        export_limit_kw: f64,
    ) {
        let deficit = sum(slot.fixed_deficit, &slot.deficits);
        let surplus = sum(slot.fixed_surplus, &slot.surpluses);
        let p2p = self.vars.add(variable().min(0.0));
        self.constraints.push(Expression::from(p2p).leq(deficit.clone()));
        self.constraints.push(Expression::from(p2p).leq(surplus.clone()));
        // import − export = D − S + loss·P; cost r·(D − (1−loss)·P) − f·(S − P).
        self.objective += slot.retail * deficit.clone() - slot.feed_in * surplus.clone();
        self.objective.add_mul(-(slot.retail * (1.0 - self.loss) - slot.feed_in), p2p);
        if self.overload_penalty > 0.0 {
            let net_import = deficit - surplus + self.loss * p2p;
            for (limit_kw, direction) in [(import_limit_kw, 1.0), (export_limit_kw, -1.0)] {
                if limit_kw.is_finite() {
                    let over = self.vars.add(variable().min(0.0));
                    self.constraints.push(
                        Expression::from(over)
                            .geq(direction * net_import.clone() - limit_kw * self.hours),
                    );
                    self.objective.add_mul(self.overload_penalty, over);
                    slot.overloads.push(over);
                }
            }
        }
        slot.p2p = Some(p2p);
    }

    /// One peak variable per run of slots of the same period, above each of
    /// their net imports (kW) and, for the first, above the peak so far;
    /// `per_kw ×` the peak is in the objective.
    fn add_demand_charge(&mut self, slots: &[SlotVars], d: &DemandInput) {
        let mut peak: Option<(u64, Variable)> = None;
        for (k, slot) in slots.iter().enumerate() {
            let period = d.periods[k];
            let var = match peak {
                Some((p, v)) if p == period => v,
                _ => {
                    let floor = if k == 0 { d.peak_so_far_kw.max(0.0) } else { 0.0 };
                    let v = self.vars.add(variable().min(floor));
                    self.objective.add_mul(d.per_kw, v);
                    peak = Some((period, v));
                    v
                }
            };
            let net_import = sum(slot.fixed_deficit, &slot.deficits)
                - sum(slot.fixed_surplus, &slot.surpluses)
                + self.loss * slot.p2p.expect("p2p is added with the slot");
            self.constraints.push((self.hours * var).geq(net_import));
        }
    }

    /// Solves the LP and reads the plan out of the solution.
    pub(crate) fn solve(self) -> Result<OptimumPlan, EvalError> {
        let Lp {
            vars,
            constraints,
            objective,
            households,
            slots,
            schedule,
            hours,
            loss,
            overload_penalty,
            demand,
        } = self;
        let (n_variables, n_constraints) = (vars.len(), constraints.len());
        let solution = vars
            .minimise(objective)
            .using(clarabel)
            .with_all(constraints)
            .solve()
            .map_err(|e| EvalError::Solver(format!("Clarabel found no optimum: {e}")))?;
        let status = format!("{:?}", solution.inner().status);
        if !matches!(status.as_str(), "Solved" | "AlmostSolved") {
            return Err(EvalError::Solver(format!("Clarabel stopped with status {status}")));
        }
        let value = |v: Variable| {
            let x = solution.value(v).max(0.0);
            if x < NOISE_KWH {
                0.0
            } else {
                x
            }
        };
        let household_plans: Vec<HouseholdPlan> =
            households.iter().map(|h| read_household(h, &value)).collect();
        let mut cost = 0.0;
        let mut p2p_kwh = Vec::with_capacity(slots.len());
        let mut net_import_kw = Vec::with_capacity(slots.len());
        for (k, s) in slots.iter().enumerate() {
            let deficit: f64 = household_plans.iter().map(|h| h.deficit_kwh[k]).sum();
            let surplus: f64 = household_plans.iter().map(|h| h.surplus_kwh[k]).sum();
            // Trade is worth its maximum in all but odd feeder cases; snap the
            // solver's 1e-9 shy of it to the maximum so exports read as 0.
            let most = deficit.min(surplus);
            let p2p = s.p2p.map_or(0.0, value);
            let p2p = if p2p > most - 1e-7 { most } else { p2p };
            cost += s.retail * (deficit - (1.0 - loss) * p2p) - s.feed_in * (surplus - p2p);
            cost += overload_penalty * s.overloads.iter().map(|v| value(*v)).sum::<f64>();
            p2p_kwh.push(p2p);
            net_import_kw.push((deficit - surplus + loss * p2p) / hours);
        }
        if let Some(d) = &demand {
            cost += demand_cost(d, &net_import_kw);
        }
        for (h, plan) in households.iter().zip(&household_plans) {
            if let Some(b) = &h.battery {
                cost += b.degradation_per_kwh
                    * (plan.charge_kwh.iter().sum::<f64>()
                        + plan.discharge_kwh.iter().sum::<f64>());
            }
        }
        let shortfall: f64 =
            household_plans.iter().map(|h| h.ev_shortfall_kwh.iter().sum::<f64>()).sum();
        let summary = LpSummary {
            lower_bound_cost: cost,
            battery_households: households.iter().filter(|h| h.battery.is_some()).count(),
            slots: schedule.len(),
            variables: n_variables,
            constraints: n_constraints,
            ev_shortfall_kwh: shortfall,
            solver_status: status,
            solver_iterations: solution.inner().iterations,
        };
        Ok(OptimumPlan { slots: schedule, households: household_plans, p2p_kwh, summary })
    }
}

/// The demand charge of a plan whose community net import is
/// `net_import_kw` per slot: each period's peak (the first's above the peak
/// already reached) × the charge, as the KPIs count it.
fn demand_cost(d: &DemandVars, net_import_kw: &[f64]) -> f64 {
    let mut cost = 0.0;
    let mut k = 0;
    while k < net_import_kw.len() {
        let period = d.periods[k];
        let floor = if k == 0 { d.peak_so_far_kw.max(0.0) } else { 0.0 };
        let mut peak = floor;
        while k < net_import_kw.len() && d.periods[k] == period {
            peak = peak.max(net_import_kw[k]);
            k += 1;
        }
        cost += d.per_kw * (peak - floor);
    }
    cost
}

/// A household's schedule from the solution.
fn read_household(h: &HouseholdVars, value: &impl Fn(Variable) -> f64) -> HouseholdPlan {
    let n = h.net_kwh.len();
    let mut plan = HouseholdPlan {
        charge_kwh: vec![0.0; n],
        discharge_kwh: vec![0.0; n],
        stored_kwh: vec![0.0; n],
        battery_available: vec![false; n],
        deficit_kwh: h.net_kwh.iter().map(|b| b.max(0.0)).collect(),
        surplus_kwh: h.net_kwh.iter().map(|b| (-b).max(0.0)).collect(),
        ev_shortfall_kwh: vec![0.0; n],
        one_way_efficiency: None,
    };
    let Some(b) = &h.battery else {
        return plan;
    };
    plan.one_way_efficiency = Some(b.one_way_efficiency);
    let mut stored = b.initial_kwh;
    for (k, f) in b.flows.iter().enumerate() {
        if let Some(f) = f {
            plan.charge_kwh[k] = value(f.charge);
            plan.discharge_kwh[k] = value(f.discharge);
            plan.deficit_kwh[k] = value(f.deficit);
            plan.surplus_kwh[k] = value(f.surplus);
            plan.battery_available[k] = true;
            stored = value(f.stored);
        }
        plan.stored_kwh[k] = stored;
    }
    for &(k, v) in &b.shortfalls {
        let x = value(v);
        plan.ev_shortfall_kwh[k] += if x < 1e-6 { 0.0 } else { x };
    }
    plan
}
