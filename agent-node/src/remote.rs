//! The remote policy (`--policy remote:URL`): an external `PolicyService`
//! (`proto/peergrid/policy/v1/policy.proto`) decides the actions of every
//! hosted prosumer, one call per node per slot, while the households —
//! observation, safety filter, battery, settlement — stay here.
//!
//! [`RemotePolicy`] owns the connection and everything around one slot's
//! call: it builds the [`ObservationBatch`] (attaching the outcome of the
//! slot settled since the last call, [`RemotePolicy::settled`]), bounds the
//! call, connecting included, by `remote_policy_timeout_ms`, and checks the
//! answer (validated by the proto crate, then [`ActionBatch::answers`]: the
//! same slot and ids). Whatever goes wrong gives `None` — the slot is played
//! with the rule-based action — and is counted
//! (`agent_remote_policy_fallbacks_total{reason}`) and logged, at most one
//! warning per [`WARN_EVERY`] with the number of warnings held back. It
//! never returns an error: a policy service cannot end the node's market
//! session.
//!
//! Reconnecting: a service that cannot be reached or does not answer in
//! time (`unavailable`, `timeout`) is not called again before a backoff
//! delay (`peergrid_runtime::Backoff` with the node's `reconnect` settings,
//! seeded jitter); the slots in between fall back at once, without a call
//! and without holding the market ([`RemotePolicy::ready`]). The channel is
//! dropped when the service is unavailable and dialled afresh on the next
//! try. A service that answers — even with an error status or an invalid
//! answer (`refused`, `invalid`) — is called again the next slot.
//!
//! A shutdown ends the wait for an answer at once (that slot falls back),
//! so SIGTERM never waits out the timeout.
//!
//! The session sends the market a `Hold` before each call (so a slow
//! policy slows the market instead of losing the slot); see `session.rs`.

use std::time::{Duration, Instant};

use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::remote::{ActionBatch, ObservationBatch, ProsumerOutcome, SlotFeedback};
use peergrid_core::policy::Action;
use peergrid_core::units::ProsumerId;
use peergrid_runtime::{Backoff, Shutdown};
use tonic::Code;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::grpc::{PolicyCallError, PolicyClient};
use crate::metrics::AgentMetrics;

/// At most one fallback warning per this long (the rest are counted).
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a slot fell back, and what the log says about it.
#[derive(Debug, PartialEq)]
pub(crate) struct Fallback {
    /// One of `crate::metrics::FALLBACK_REASONS`.
    pub reason: &'static str,
    pub detail: String,
}

impl Fallback {
    fn new(reason: &'static str, detail: impl Into<String>) -> Fallback {
        Fallback { reason, detail: detail.into() }
    }

    /// Whether the service should be left alone for a backoff delay.
    fn backs_off(&self) -> bool {
        matches!(self.reason, "timeout" | "unavailable")
    }
}

/// The fallback a failed call's status means: the service is gone or not
/// listening (`unavailable`: reconnect), it ran out of its own deadline
/// (`timeout`), or it answered with an error (`refused`).
pub(crate) fn fallback_for_status(status: &tonic::Status) -> Fallback {
    let reason = match status.code() {
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timeout",
        _ => "refused",
    };
    Fallback::new(reason, format!("{:?}: {}", status.code(), status.message()))
}

/// Lets one event through per `every`, counting the ones held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle { every, last: None, held_back: 0 }
    }

    /// `Some(n)`: log now, `n` events were held back since the last one;
    /// `None`: hold this one back.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// The node's side of a remote policy.
pub(crate) struct RemotePolicy {
    cfg: AgentConfig,
    timeout: Duration,
    client: Option<PolicyClient>,
    backoff: Backoff,
    /// No call before this instant (backing off after a failure).
    retry_at: Option<Instant>,
    /// The outcome of the last slot settled since the last call.
    feedback: Option<SlotFeedback>,
    /// The slot played last, and whether with the service's actions.
    last_played: Option<(u64, bool)>,
    metrics: AgentMetrics,
    warnings: Throttle,
    /// Slots fallen back since the service last answered.
    failing: u64,
    /// Slots played with the service's actions, and fallen back, in all.
    calls: u64,
    fallbacks: u64,
    /// A call in progress stops waiting when this fires (the slot falls back).
    shutdown: Option<Shutdown>,
}

impl RemotePolicy {
    /// The remote policy of `cfg` (`policy: remote:URL`); nothing is dialled yet.
    pub(crate) fn new(cfg: &AgentConfig, metrics: AgentMetrics) -> RemotePolicy {
        let r = &cfg.reconnect;
        let seed = peergrid_core::rng::derive_seed(
            cfg.community.seed,
            &format!("{}/remote-policy", cfg.name),
        );
        let backoff =
            Backoff::new(Duration::from_millis(r.base_ms), Duration::from_millis(r.max_ms), 2.0)
                .with_jitter(seed);
        RemotePolicy {
            cfg: cfg.clone(),
            timeout: Duration::from_millis(cfg.remote_policy_timeout_ms),
            client: None,
            backoff,
            retry_at: None,
            feedback: None,
            last_played: None,
            metrics,
            warnings: Throttle::new(WARN_EVERY),
            failing: 0,
            calls: 0,
            fallbacks: 0,
            shutdown: None,
        }
    }

    /// Stop waiting for an answer when `shutdown` fires: the node finishes
    /// its slot with the rule-based action instead of waiting out the timeout.
    pub(crate) fn stop_waiting_on(&mut self, shutdown: Shutdown) {
        self.shutdown = Some(shutdown);
    }

    /// Slots played with the service's actions, and with the rule-based fallback, so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.calls, self.fallbacks)
    }

    /// Whether the next slot calls the service (false while backing off).
    pub(crate) fn ready(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// The actions of slot `slot` for `ids` (the hosted prosumers, ascending) seeing
    /// `observations` (one row per id), or `None`: play the rule-based
    /// action (counted and logged here). Call only when [`ready`](Self::ready).
    pub(crate) async fn act(
        &mut self,
        slot: u64,
        ids: &[ProsumerId],
        observations: Vec<[f32; OBS_DIM]>,
    ) -> Option<Vec<Action>> {
        let batch = ObservationBatch {
            node_name: self.cfg.name.clone(),
            slot,
            prosumer_ids: ids.to_vec(),
            observations,
            previous: self.feedback.take(),
        };
        let started = Instant::now();
        let (timeout, shutdown) = (self.timeout, self.shutdown.clone());
        let call = async {
            match tokio::time::timeout(timeout, self.call(&batch)).await {
                Ok(answer) => answer,
                Err(_) => Err(Fallback::new(
                    "timeout",
                    format!("no answer within {} ms", timeout.as_millis()),
                )),
            }
        };
        let answer = match shutdown {
            Some(mut shutdown) => tokio::select! {
                answer = call => answer,
                _ = shutdown.recv() => Err(Fallback::new("unavailable", "the node is shutting down")),
            },
            None => call.await,
        };
        self.metrics.remote_policy_seconds.observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(actions) => {
                self.backoff.reset();
                self.retry_at = None;
                self.metrics.remote_policy_calls.inc();
                self.calls += 1;
                if self.failing > 0 {
                    info!(slot, fallbacks = self.failing, "the remote policy answers again");
                    self.failing = 0;
                }
                self.last_played = Some((slot, true));
                Some(actions)
            }
            Err(fallback) => {
                if fallback.backs_off() {
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                }
                self.fall_back(slot, fallback);
                None
            }
        }
    }

    /// Slot `slot` is played without calling (backing off): counted as `unavailable`.
    pub(crate) fn skip(&mut self, slot: u64) {
        self.fall_back(slot, Fallback::new("unavailable", "backing off after a failed call"));
    }

    /// Slot `slot` settled with these outcomes (by id): sent with the next call.
    pub(crate) fn settled(&mut self, slot: u64, outcomes: Vec<ProsumerOutcome>) {
        if outcomes.is_empty() {
            return;
        }
        let remote_actions = self.last_played == Some((slot, true));
        self.feedback = Some(SlotFeedback { slot, outcomes, remote_actions });
    }

    /// Connects if needed and calls; the actions if the answer fits `batch`.
    async fn call(&mut self, batch: &ObservationBatch) -> Result<Vec<Action>, Fallback> {
        let client = match &mut self.client {
            Some(client) => client,
            none @ None => {
                let client = PolicyClient::connect(&self.cfg)
                    .await
                    .map_err(|e| Fallback::new("unavailable", e.to_string()))?;
                none.insert(client)
            }
        };
        let answer: Result<ActionBatch, PolicyCallError> = client.act(batch).await;
        match answer {
            Ok(answer) => match answer.answers(batch) {
                Ok(()) => Ok(answer.actions),
                Err(e) => Err(Fallback::new(
                    "invalid",
                    format!("the answer is not for this request: {e}"),
                )),
            },
            Err(PolicyCallError::Invalid(e)) => Err(Fallback::new("invalid", e.to_string())),
            Err(PolicyCallError::Status(status)) => {
                let fallback = fallback_for_status(&status);
                if fallback.reason == "unavailable" {
                    // Dial afresh next time (a restarted service, a rotated CA).
                    self.client = None;
                }
                Err(fallback)
            }
        }
    }

    fn fall_back(&mut self, slot: u64, fallback: Fallback) {
        self.metrics.count_fallback(fallback.reason);
        self.failing += 1;
        self.fallbacks += 1;
        self.last_played = Some((slot, false));
        if let Some(held_back) = self.warnings.allow(Instant::now()) {
            warn!(
                slot,
                reason = fallback.reason,
                held_back,
                url = %self.cfg.remote_policy_target().map_or("", |t| t.url),
                "remote policy: {}; playing the rule-based action this slot",
                fallback.detail
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PolicyChoice, ReconnectConfig};
    use peergrid_proto::pb::policy::v1 as pb;
    use peergrid_proto::pb::policy::v1::policy_service_server::{
        PolicyService, PolicyServiceServer,
    };
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// What the stand-in service answers.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        /// Charge as fast as allowed, offer nothing.
        Charge,
        /// One action short.
        OneShort,
        /// A NaN in the first action.
        NotFinite,
        /// For the slot after the one asked for.
        WrongSlot,
        /// An error status.
        Refuse,
        /// Charge, after this long.
        Slow(Duration),
    }

    #[derive(Clone)]
    struct StandIn {
        answer: Arc<Mutex<Answer>>,
        seen: Arc<Mutex<Vec<ObservationBatch>>>,
    }

    #[tonic::async_trait]
    impl PolicyService for StandIn {
        async fn act(
            &self,
            request: tonic::Request<pb::ActRequest>,
        ) -> Result<tonic::Response<pb::ActResponse>, tonic::Status> {
            let batch = ObservationBatch::try_from(request.into_inner())?;
            self.seen.lock().unwrap().push(batch.clone());
            let answer = *self.answer.lock().unwrap();
            if let Answer::Slow(d) = answer {
                tokio::time::sleep(d).await;
            }
            let n = batch.prosumer_ids.len();
            let mut actions = vec![Action { battery: 1.0, quantity: -1.0, price: 0.0 }; n];
            let mut slot = batch.slot;
            match answer {
                Answer::OneShort => {
                    actions.pop();
                }
                Answer::NotFinite => actions[0].battery = f32::NAN,
                Answer::WrongSlot => slot += 1,
                Answer::Refuse => return Err(tonic::Status::internal("the policy crashed")),
                Answer::Charge | Answer::Slow(_) => {}
            }
            let answer = ActionBatch { slot, prosumer_ids: batch.prosumer_ids, actions };
            Ok(tonic::Response::new(pb::ActResponse::from(&answer)))
        }
    }

    impl StandIn {
        fn new(answer: Answer) -> StandIn {
            StandIn { answer: Arc::new(Mutex::new(answer)), seen: Arc::default() }
        }

        /// Serves on `addr` (port 0: any) until the returned sender is dropped or fired.
        async fn serve(&self, addr: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
            let listener = peergrid_runtime::GrpcListener::bind(addr, None).await.unwrap();
            let bound = listener.tcp_addr().expect("a TCP listener");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let services = peergrid_runtime::Services::new(peergrid_proto::FILE_DESCRIPTOR_SET)
                .add_service(PolicyServiceServer::new(self.clone()));
            let stopped = async {
                let _ = stopped.await;
            };
            let options = peergrid_runtime::ServeOptions::plain(Duration::from_secs(1));
            tokio::spawn(peergrid_runtime::serve(listener, services, stopped, options));
            (bound, stop)
        }

        fn set(&self, answer: Answer) {
            *self.answer.lock().unwrap() = answer;
        }

        fn seen(&self) -> Vec<ObservationBatch> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn remote(addr: SocketAddr, timeout_ms: u64) -> (RemotePolicy, AgentMetrics) {
        let cfg = AgentConfig {
            name: "node-t".into(),
            policy: PolicyChoice::Remote(format!("http://{addr}")),
            insecure_no_auth: true,
            remote_policy_timeout_ms: timeout_ms,
            connect_timeout_ms: 2_000,
            reconnect: ReconnectConfig { base_ms: 100, max_ms: 200, max_attempts: None },
            ..AgentConfig::default()
        };
        cfg.validate().unwrap();
        let metrics = AgentMetrics::detached();
        (RemotePolicy::new(&cfg, metrics.clone()), metrics)
    }

    const IDS: [ProsumerId; 3] = [4, 5, 6];

    fn observations(soc: f32) -> Vec<[f32; OBS_DIM]> {
        IDS.iter()
            .map(|&id| std::array::from_fn(|f| if f == 2 { soc } else { id as f32 }))
            .collect()
    }

    fn outcomes() -> Vec<ProsumerOutcome> {
        IDS.iter()
            .map(|&id| ProsumerOutcome {
                prosumer_id: id,
                reward: -1.0,
                cost: 1.0,
                grid_import_kwh: 2.0,
                done: false,
                settled_by_market: true,
            })
            .collect()
    }

    /// Waits (bounded) until the backoff lets the next slot call.
    async fn until_ready(remote: &RemotePolicy) {
        for _ in 0..100 {
            if remote.ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the remote policy did not become ready within 2 s of backing off");
    }

    #[tokio::test]
    async fn answers_are_played_and_each_outcome_goes_with_the_next_call() {
        let service = StandIn::new(Answer::Charge);
        let (addr, _stop) = service.serve("127.0.0.1:0".parse().unwrap()).await;
        let (mut remote, metrics) = remote(addr, 5_000);
        let actions = remote.act(10, &IDS, observations(0.5)).await.expect("the service's actions");
        assert_eq!(actions, vec![Action { battery: 1.0, quantity: -1.0, price: 0.0 }; 3]);
        remote.settled(10, outcomes());
        assert!(remote.act(11, &IDS, observations(0.6)).await.is_some());
        let seen = service.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].slot, seen[0].node_name.as_str(), seen[0].previous.as_ref()),
            (10, "node-t", None)
        );
        assert_eq!(seen[0].prosumer_ids, IDS);
        assert_eq!(seen[1].observations, observations(0.6));
        let previous =
            seen[1].previous.as_ref().expect("the outcome of slot 10 comes with slot 11");
        assert_eq!(
            (previous.slot, previous.remote_actions, previous.outcomes.clone()),
            (10, true, outcomes())
        );
        assert_eq!(metrics.remote_policy_calls.get(), 2);
    }

    #[tokio::test]
    async fn unusable_answers_fall_back_counted_and_the_next_slot_calls_again() {
        let service = StandIn::new(Answer::OneShort);
        let (addr, _stop) = service.serve("127.0.0.1:0".parse().unwrap()).await;
        let (mut remote, metrics) = remote(addr, 5_000);
        let cases = [
            (Answer::OneShort, "invalid"),
            (Answer::NotFinite, "invalid"),
            (Answer::WrongSlot, "invalid"),
            (Answer::Refuse, "refused"),
        ];
        for (slot, (answer, reason)) in cases.into_iter().enumerate() {
            service.set(answer);
            let before = metrics.fallbacks(reason);
            assert_eq!(remote.act(slot as u64, &IDS, observations(0.1)).await, None, "{answer:?}");
            assert_eq!(metrics.fallbacks(reason), before + 1, "{answer:?}");
            assert!(remote.ready(), "a service that answers is asked again at once ({answer:?})");
            remote.settled(slot as u64, outcomes());
        }
        service.set(Answer::Charge);
        assert!(remote.act(9, &IDS, observations(0.1)).await.is_some());
        let last = service.seen().pop().unwrap();
        let previous = last.previous.expect("the fallback slot's outcome is sent");
        assert_eq!(
            (previous.slot, previous.remote_actions),
            (3, false),
            "slot 3 was played with the rule-based action"
        );
        assert_eq!(metrics.remote_policy_calls.get(), 1);
    }

    #[tokio::test]
    async fn a_slow_service_times_out_backs_off_and_is_asked_again_later() {
        let service = StandIn::new(Answer::Slow(Duration::from_secs(3)));
        let (addr, _stop) = service.serve("127.0.0.1:0".parse().unwrap()).await;
        let (mut remote, metrics) = remote(addr, 100);
        assert_eq!(remote.act(0, &IDS, observations(0.1)).await, None);
        assert_eq!(metrics.fallbacks("timeout"), 1);
        assert!(!remote.ready(), "a timed-out service is left alone for a backoff delay");
        remote.skip(1);
        assert_eq!(metrics.fallbacks("unavailable"), 1);
        service.set(Answer::Charge);
        until_ready(&remote).await;
        assert!(remote.act(2, &IDS, observations(0.1)).await.is_some());
        assert_eq!(
            service.seen().iter().map(|b| b.slot).collect::<Vec<_>>(),
            [0, 2],
            "no call while backing off"
        );
    }

    #[tokio::test]
    async fn a_shutdown_stops_waiting_for_an_answer() {
        let service = StandIn::new(Answer::Slow(Duration::from_secs(30)));
        let (addr, _stop) = service.serve("127.0.0.1:0".parse().unwrap()).await;
        let (mut remote, metrics) = remote(addr, 60_000);
        let controller = peergrid_runtime::ShutdownController::new();
        remote.stop_waiting_on(controller.subscribe());
        let trigger = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            controller.trigger();
        };
        let started = Instant::now();
        let (answer, ()) = tokio::join!(remote.act(0, &IDS, observations(0.1)), trigger);
        assert_eq!(answer, None);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stopped waiting at shutdown, not at the 60 s timeout"
        );
        assert_eq!(metrics.fallbacks("unavailable"), 1);
    }

    #[tokio::test]
    async fn a_gone_service_is_unavailable_and_dialled_again_when_back() {
        // A port nobody listens on (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (mut remote, metrics) = remote(addr, 2_000);
        assert_eq!(remote.act(0, &IDS, observations(0.1)).await, None);
        assert_eq!(metrics.fallbacks("unavailable"), 1);
        assert!(!remote.ready());
        let service = StandIn::new(Answer::Charge);
        let (_, stop) = service.serve(addr).await;
        until_ready(&remote).await;
        assert!(
            remote.act(1, &IDS, observations(0.1)).await.is_some(),
            "reconnected after the backoff"
        );
        // It goes away again: the next call fails (the channel is dropped)
        // and the one after the backoff dials afresh.
        drop(stop);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(remote.act(2, &IDS, observations(0.1)).await, None);
        assert_eq!(metrics.fallbacks("unavailable"), 2);
        let (_, _stop) = service.serve(addr).await;
        until_ready(&remote).await;
        assert!(remote.act(3, &IDS, observations(0.1)).await.is_some());
        assert_eq!(metrics.remote_policy_calls.get(), 2);
    }

    #[test]
    fn statuses_map_to_reasons() {
        assert_eq!(
            fallback_for_status(&tonic::Status::unavailable("connection refused")).reason,
            "unavailable"
        );
        assert_eq!(
            fallback_for_status(&tonic::Status::deadline_exceeded("late")).reason,
            "timeout"
        );
        for status in [
            tonic::Status::internal("boom"),
            tonic::Status::unknown("exception"),
            tonic::Status::unauthenticated("token"),
        ] {
            let f = fallback_for_status(&status);
            assert_eq!(f.reason, "refused", "{status:?}");
            assert!(f.detail.contains(status.message()), "{f:?}");
        }
        assert!(
            Fallback::new("timeout", "").backs_off()
                && Fallback::new("unavailable", "").backs_off()
        );
        assert!(
            !Fallback::new("refused", "").backs_off() && !Fallback::new("invalid", "").backs_off()
        );
    }

    #[test]
    fn the_throttle_lets_one_through_per_period_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(30)), Some(1));
    }
}
