//! Test harness: a market started in-process on loopback ports, and fake
//! agent-nodes that speak the real gRPC protocol and compute genuine reports
//! with the domain core (`generate_range` + `Household::play` + `RuleBased`).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use peergrid_core::data::citylearn::bundled_citylearn;
use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, Household};
use peergrid_core::physics::Envelope;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::{generate_range, CommunityConfig, ProsumerSpec};
use peergrid_core::simulation::SimConfig;
use peergrid_market_node::{MarketConfig, MarketHandle, MarketSettings};
use peergrid_proto::convert::envelope_to_wire;
use peergrid_proto::convert::slot::{report_to_wire, slot_open_from_wire};
use peergrid_proto::pb::control::v1::control_service_client::ControlServiceClient;
use peergrid_proto::pb::market::v1 as pb;
use peergrid_proto::pb::market::v1::market_service_client::MarketServiceClient;
use peergrid_runtime::{BearerInterceptor, ShutdownController, Tokens};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub(crate) const AGENT: &str = "agent-token-for-tests-0123";
pub(crate) const OPERATOR: &str = "operator-token-for-tests-0123";
pub(crate) const SEED: u64 = 7;

pub(crate) type Market = MarketServiceClient<InterceptedService<Channel, BearerInterceptor>>;
pub(crate) type Control = ControlServiceClient<InterceptedService<Channel, BearerInterceptor>>;

pub(crate) fn dataset() -> Arc<Dataset> {
    static DS: OnceLock<Arc<Dataset>> = OnceLock::new();
    Arc::clone(DS.get_or_init(|| Arc::new(bundled_citylearn().expect("bundled data"))))
}

pub(crate) fn community(n: usize) -> CommunityConfig {
    CommunityConfig { n_prosumers: n, seed: SEED, ..CommunityConfig::default() }
}

pub(crate) fn tokens() -> Tokens {
    Tokens::new(Some(AGENT.into()), Some(OPERATOR.into())).unwrap()
}

/// Settings for tests: ephemeral port, long deadlines (tests never depend on timing).
pub(crate) fn settings() -> MarketSettings {
    MarketSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        deadline_ms: 60_000,
        start_slot: 4000,
        ..MarketSettings::default()
    }
}

pub(crate) struct TestMarket {
    pub controller: ShutdownController,
    pub handle: Option<MarketHandle>,
    pub channel: Channel,
}

impl TestMarket {
    pub(crate) async fn start(settings: MarketSettings) -> TestMarket {
        let config = MarketConfig::new(settings, SimConfig::default(), tokens()).unwrap();
        let controller = ShutdownController::new();
        let handle =
            peergrid_market_node::start_with_dataset(config, dataset(), controller.subscribe())
                .await
                .unwrap();
        let channel = match peergrid_runtime::inproc::local_name(handle.url()) {
            Some(name) => {
                peergrid_runtime::inproc::connect(peergrid_runtime::inproc::endpoint(), name)
                    .await
                    .unwrap()
            }
            None => tonic::transport::Endpoint::from_shared(handle.url().to_owned())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        };
        TestMarket { controller, handle: Some(handle), channel }
    }

    pub(crate) fn market(&self, token: &str) -> Market {
        MarketServiceClient::with_interceptor(
            self.channel.clone(),
            BearerInterceptor::new(token).unwrap(),
        )
    }

    pub(crate) fn control(&self, token: &str) -> Control {
        ControlServiceClient::with_interceptor(
            self.channel.clone(),
            BearerInterceptor::new(token).unwrap(),
        )
    }

    pub(crate) async fn status(&self) -> pb::StatusResponse {
        self.market(AGENT).status(pb::StatusRequest {}).await.unwrap().into_inner()
    }

    /// Waits (via Watch) until slot `slot` has cleared.
    pub(crate) async fn wait_for_slot(&self, slot: u64) {
        let mut watch =
            self.market(OPERATOR).watch(pb::WatchRequest {}).await.unwrap().into_inner();
        if self.status().await.kpis.unwrap().slots > slot {
            return;
        }
        loop {
            let event = tokio::time::timeout(Duration::from_secs(120), watch.message())
                .await
                .expect("slot clears")
                .unwrap();
            if let Some(pb::MarketEvent { event: Some(pb::market_event::Event::Slot(s)) }) = event {
                if s.slot >= slot {
                    return;
                }
            }
        }
    }

    pub(crate) async fn stop(mut self) {
        self.controller.trigger();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), handle.join())
            .await
            .expect("market drains")
            .unwrap();
    }
}

/// The households of one node, played with the rule-based policy.
pub(crate) struct Agent {
    pub ds: Arc<Dataset>,
    pub specs: Vec<ProsumerSpec>,
    pub households: Option<Vec<Household>>,
    pub policy: RuleBased,
}

impl Agent {
    pub(crate) fn new(first: u32, count: u32, community_size: usize) -> Agent {
        let ds = dataset();
        let specs = generate_range(&ds, &community(community_size), first, count).unwrap();
        Agent { ds, specs, households: None, policy: RuleBased }
    }

    pub(crate) fn summaries(&self) -> Vec<pb::ProsumerSummary> {
        self.specs.iter().map(|s| envelope_to_wire(s.id, &Envelope::of(s))).collect()
    }

    /// This node's batch for a slot: every online household plays it.
    pub(crate) fn play(&mut self, open: &pb::SlotOpen) -> pb::OrderBatch {
        let open = slot_open_from_wire(open).unwrap();
        let specs = &self.specs;
        let households = self.households.get_or_insert_with(|| {
            specs.iter().map(|s| Household::new(s.clone(), open.ctx.hour)).collect()
        });
        let mut reports = Vec::new();
        for h in households.iter_mut() {
            let (cond, offline) = conditions_for(h.spec.id, &open.adjustments);
            if !offline {
                reports.push(report_to_wire(&h.play(&self.ds, &open.ctx, cond, &mut self.policy)));
            }
        }
        pb::OrderBatch { slot: open.slot, reports }
    }
}

/// A connected node: its outgoing message queue and its incoming stream.
pub(crate) struct Node {
    pub first: u32,
    pub count: u32,
    pub session_id: String,
    pub tx: mpsc::Sender<pb::NodeMessage>,
    pub rx: Streaming<pb::MarketMessage>,
}

pub(crate) async fn register(market: &TestMarket, name: &str, count: u32) -> pb::RegisterResponse {
    let request =
        pb::RegisterRequest { node_name: name.into(), prosumer_count: count, ..Default::default() };
    market.market(AGENT).register(request).await.unwrap().into_inner()
}

/// Opens a session and joins; returns once the market has accepted the join.
pub(crate) async fn join(
    market: &TestMarket,
    session_id: &str,
    secret: &str,
    first: u32,
    agent: &Agent,
) -> Result<Node, Status> {
    let (tx, rx) = mpsc::channel(16);
    let join = pb::Join {
        session_id: session_id.into(),
        prosumers: agent.summaries(),
        resume_secret: secret.into(),
    };
    tx.send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Join(join)) }).await.unwrap();
    let rx = market.market(AGENT).session(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Node { first, count: agent.specs.len() as u32, session_id: session_id.into(), tx, rx })
}

pub(crate) async fn connect(
    market: &TestMarket,
    name: &str,
    count: u32,
    community_size: usize,
) -> (Node, Agent) {
    let reg = register(market, name, count).await;
    let agent = Agent::new(reg.first_prosumer_id, count, community_size);
    let node = join(market, &reg.session_id, &reg.resume_secret, reg.first_prosumer_id, &agent)
        .await
        .unwrap();
    (node, agent)
}

impl Node {
    pub(crate) async fn send(&self, batch: pb::OrderBatch) {
        self.tx
            .send(pb::NodeMessage { msg: Some(pb::node_message::Msg::Batch(batch)) })
            .await
            .unwrap();
    }

    /// The next message (or the status that ended the stream).
    pub(crate) async fn next(&mut self) -> Result<pb::market_message::Msg, Status> {
        let m = tokio::time::timeout(Duration::from_secs(120), self.rx.message())
            .await
            .expect("a message arrives")?;
        Ok(m.expect("stream open").msg.expect("message set"))
    }

    pub(crate) async fn next_open(&mut self) -> pb::SlotOpen {
        loop {
            if let pb::market_message::Msg::Open(o) = self.next().await.unwrap() {
                return o;
            }
        }
    }
}

/// Runs a node in the background: answers every SlotOpen with its agent's
/// batch; every message received is forwarded to the returned channel.
pub(crate) fn run_node(
    mut node: Node,
    mut agent: Agent,
) -> mpsc::UnboundedReceiver<pb::market_message::Msg> {
    let (seen, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(m)) = node.rx.message().await {
            let Some(msg) = m.msg else { continue };
            if let pb::market_message::Msg::Open(open) = &msg {
                node.send(agent.play(open)).await;
            }
            if seen.send(msg).is_err() {
                break;
            }
        }
    });
    rx
}

pub(crate) async fn recv(
    rx: &mut mpsc::UnboundedReceiver<pb::market_message::Msg>,
) -> pb::market_message::Msg {
    tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .expect("a message arrives")
        .expect("node running")
}
