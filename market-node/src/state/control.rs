//! Run control: what the clock may do next, and the scenario in force.
//!
//! [`Control`] holds the operator's settings (mode, deadline, period),
//! whether the run started, is paused or steps a number of slots, and the
//! scenario: events injected (pending until the next slot opens), events
//! of a loaded scenario (scheduled by slot) and the timed effects in force.
//! Every command is validated whole before anything changes. It answers in
//! the operator's words (`"paused; next slot 12"`) and never opens a slot
//! itself: [`super::MarketState::open`] asks it what holds for the slot.

use peergrid_core::household::Adjustment;
use peergrid_core::observation::SlotContext;
use peergrid_core::units::PricePerKwh;

use crate::config::{ClockMode, MarketSettings, DEADLINE_MS, SLOT_PERIOD_MS};
use crate::error::MarketError;
use crate::scenario::{
    parse_scenario, Effects, FeederLimit, ScenarioEvent, TimedEvent, MAX_LIVE_EVENTS,
};

/// Most slots one `Step` may clear.
pub(crate) const MAX_STEP: u32 = 100_000;

/// Run control and the scenario.
#[derive(Clone, Debug)]
pub(super) struct Control {
    mode: ClockMode,
    deadline_ms: u64,
    slot_period_ms: u64,
    min_prosumers: u64,
    max_slots: Option<u64>,
    started: bool,
    paused: bool,
    steps_left: Option<u32>,
    /// Timed effects in force (scale, offline, tariff).
    effects: Effects,
    /// Events of loaded scenarios, by `at_slot`.
    scheduled: Vec<TimedEvent>,
    /// Injected events, applied when the next slot opens.
    pending: Vec<ScenarioEvent>,
}

impl Control {
    pub(super) fn new(settings: &MarketSettings) -> Control {
        Control {
            mode: settings.mode,
            deadline_ms: settings.deadline_ms,
            slot_period_ms: settings.slot_period_ms,
            min_prosumers: settings.min_prosumers as u64,
            max_slots: settings.max_slots,
            started: false,
            paused: false,
            steps_left: None,
            effects: Effects::default(),
            scheduled: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub(super) fn mode(&self) -> ClockMode {
        self.mode
    }

    pub(super) fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    pub(super) fn slot_period_ms(&self) -> u64 {
        self.slot_period_ms
    }

    /// Paused, stepping done, or not started yet.
    pub(super) fn paused(&self) -> bool {
        self.paused || !self.started
    }

    /// Whether the run has reached `max_slots` with `next_slot` next.
    pub(super) fn finished(&self, next_slot: u64) -> bool {
        self.max_slots.is_some_and(|m| next_slot >= m)
    }

    /// Whether the clock may open `next_slot` when no round is open: started,
    /// not paused or stepping, below `max_slots`; fast mode also needs a
    /// connected prosumer.
    pub(super) fn may_open(&self, next_slot: u64, connected_prosumers: u64) -> bool {
        self.started
            && (!self.paused || self.steps_left.is_some())
            && !self.finished(next_slot)
            && (self.mode == ClockMode::RealTime || connected_prosumers > 0)
    }

    /// The run starts by itself once `min_prosumers` are connected.
    pub(super) fn start_at_quorum(&mut self, connected_prosumers: u64) {
        if connected_prosumers >= self.min_prosumers {
            self.started = true;
        }
    }

    /// A slot opened: one step fewer; the last step pauses.
    pub(super) fn slot_opened(&mut self) {
        if let Some(left) = self.steps_left.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.steps_left = None;
                self.paused = true;
            }
        }
    }

    pub(super) fn start(&mut self, next_slot: u64) -> String {
        self.started = true;
        self.paused = false;
        self.steps_left = None;
        format!("started; next slot {next_slot}")
    }

    pub(super) fn pause(&mut self, next_slot: u64) -> String {
        self.paused = true;
        self.steps_left = None;
        format!("paused; next slot {next_slot}")
    }

    pub(super) fn resume(&mut self, next_slot: u64) -> String {
        self.started = true;
        self.paused = false;
        self.steps_left = None;
        format!("resumed; next slot {next_slot}")
    }

    /// Opens exactly `count` more slots, then pauses.
    pub(super) fn step(&mut self, count: u32, next_slot: u64) -> Result<String, MarketError> {
        if !(1..=MAX_STEP).contains(&count) {
            return Err(MarketError::invalid(
                "count",
                format!("must lie in 1..={MAX_STEP}, got {count}"),
            ));
        }
        self.started = true;
        self.paused = true;
        self.steps_left = Some(count);
        Ok(format!("stepping {count} slot(s) from slot {next_slot}"))
    }

    /// Changes the clock mode; a 0 period or deadline keeps the current one.
    pub(super) fn set_mode(
        &mut self,
        mode: ClockMode,
        slot_period_ms: u64,
        deadline_ms: u64,
    ) -> Result<String, MarketError> {
        let check = |field: &str, v: u64, (lo, hi): (u64, u64)| {
            if v == 0 || (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(MarketError::invalid(
                    field,
                    format!("must lie in {lo}..={hi} (or 0 = unchanged), got {v}"),
                ))
            }
        };
        check("slot_period_ms", slot_period_ms, SLOT_PERIOD_MS)?;
        check("deadline_ms", deadline_ms, DEADLINE_MS)?;
        self.mode = mode;
        if slot_period_ms > 0 {
            self.slot_period_ms = slot_period_ms;
        }
        if deadline_ms > 0 {
            self.deadline_ms = deadline_ms;
        }
        Ok(format!(
            "mode {}; slot period {} ms, deadline {} ms",
            mode.name(),
            self.slot_period_ms,
            self.deadline_ms
        ))
    }

    /// Validates a whole scenario, then schedules all of its events.
    pub(super) fn load_scenario(
        &mut self,
        json: &str,
        next_slot: u64,
    ) -> Result<String, MarketError> {
        let events = parse_scenario(json, next_slot)?;
        let n = events.len();
        self.room_for_events(n, "scenario_json.events")?;
        self.scheduled.extend(events);
        self.scheduled.sort_by_key(|e| e.at_slot);
        Ok(format!("scheduled {n} event(s)"))
    }

    /// Validates one event and applies it from the next slot opened.
    pub(super) fn inject(
        &mut self,
        event: ScenarioEvent,
        next_slot: u64,
    ) -> Result<String, MarketError> {
        event.validate("event")?;
        self.room_for_events(1, "event")?;
        self.pending.push(event);
        Ok(format!("{event} from slot {next_slot}"))
    }

    /// Whether `n` more events fit beside those in force, pending and scheduled.
    fn room_for_events(&self, n: usize, field: &str) -> Result<(), MarketError> {
        let live = self.effects.len() + self.pending.len() + self.scheduled.len();
        if live + n > MAX_LIVE_EVENTS {
            return Err(MarketError::exhausted(
                field,
                format!("{live} events in force or scheduled, {n} more exceed the limit of {MAX_LIVE_EVENTS}"),
            ));
        }
        Ok(())
    }

    /// Slot `slot` opens: the injected events, then the scheduled ones due,
    /// take effect. Timed effects start here; the feeder changes among them
    /// are returned, in order, for the grid to apply.
    pub(super) fn start_due_events(&mut self, slot: u64) -> Vec<FeederLimit> {
        let due: Vec<ScenarioEvent> = {
            let split = self.scheduled.partition_point(|e| e.at_slot <= slot);
            self.scheduled.drain(..split).map(|e| e.event).collect()
        };
        let mut feeder = Vec::new();
        for event in self.pending.drain(..).chain(due) {
            match event {
                ScenarioEvent::Feeder(f) => feeder.push(f),
                ref timed => self.effects.start(timed),
            }
        }
        feeder
    }

    /// The effects in force for the slot being opened: a tariff override
    /// (applied to `ctx`; `first_price` says no slot has cleared at a
    /// price yet) and the adjustments it carries. The slot uses them up.
    pub(super) fn apply_effects(
        &mut self,
        ctx: &mut SlotContext,
        first_price: bool,
    ) -> Vec<Adjustment> {
        if let Some((retail, feed_in)) = self.effects.tariff() {
            // Validated on entry: both within [0, 100] with feed-in ≤ retail.
            ctx.tariff.retail =
                PricePerKwh::from_per_kwh(retail, "retail_per_kwh").unwrap_or(ctx.tariff.retail);
            ctx.tariff.feed_in =
                PricePerKwh::from_per_kwh(feed_in, "feed_in_per_kwh").unwrap_or(ctx.tariff.feed_in);
            if first_price {
                ctx.last_clearing_price_per_kwh = ctx.tariff.midpoint().per_kwh();
            }
        }
        let adjustments = self.effects.adjustments();
        self.effects.consume_slot();
        adjustments
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{report, two_nodes};
    use crate::scenario::{ScaleGroup, ScenarioEvent};

    #[test]
    fn step_pause_and_scenario_effects() {
        let (mut s, ka, _) = two_nodes();
        s.clear();
        s.pause();
        assert!(!s.may_open());
        let scale = ScaleGroup {
            first_prosumer_id: 0,
            last_prosumer_id: 1,
            pv_scale: 0.5,
            load_scale: 1.0,
            slots: 1,
        };
        s.inject(ScenarioEvent::Scale(scale)).unwrap();
        s.load_scenario(
            r#"{"events": [{"at_slot": 2, "offline": {"first_prosumer_id": 2, "last_prosumer_id": 3, "slots": 1}}]}"#,
        )
        .unwrap();
        s.step(2).unwrap();
        let open = s.open(0, 0);
        assert_eq!(open.slot, 1);
        assert_eq!(open.adjustments.len(), 1);
        assert_eq!(open.adjustments[0].conditions.pv_scale, 0.5);
        s.clear();
        let open = s.open(0, 0);
        assert_eq!(open.adjustments.len(), 1);
        assert!(open.adjustments[0].offline);
        let e = s.submit(ka, 2, vec![report(0, 1.0, 150_000)], 0);
        assert!(e.is_ok());
        let out = s.clear();
        assert_eq!(out.summary.missing, 1, "offline prosumers 2, 3 are not missing; 1 is");
        assert!(!s.may_open(), "paused after the steps");
        assert!(s.status().paused);
        s.resume();
        assert!(s.may_open());
        assert!(
            s.load_scenario(r#"{"events": [{"at_slot": 0, "feeder": {}}]}"#).is_err(),
            "past slot"
        );
    }
}
