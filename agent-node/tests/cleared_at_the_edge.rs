//! The agent-node decodes a `SlotCleared` at its edge, in one pass, without
//! the batch it sent (issue 14): against a stand-in market that answers a
//! session with prepared messages, `SessionReceiver::next` gives a
//! validated `ClearedSlot` whose settlements are the market's to the bit,
//! and refuses a malformed one with `AgentError::Wire` naming the field.

use std::pin::Pin;

use peergrid_agent_node::config::AgentConfig;
use peergrid_agent_node::error::AgentError;
use peergrid_agent_node::grpc::{Inbound, MarketClient, Resume};
use peergrid_core::market::{Fill, Side};
use peergrid_core::settlement::{settle_household, ClearedSlot, SettledHousehold};
use peergrid_core::tariff::{GridConfig, TariffConfig};
use peergrid_core::units::{Money, PricePerKwh, Wh};
use peergrid_proto::convert::cleared::slot_cleared_to_wire;
use peergrid_proto::pb::market::v1 as pb;
use peergrid_proto::pb::market::v1::market_service_server::{MarketService, MarketServiceServer};
use peergrid_runtime::{GrpcListener, ServeOptions, Services};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type Messages = Pin<Box<dyn Stream<Item = Result<pb::MarketMessage, Status>> + Send>>;

/// A market that answers every session with `messages`, then ends it.
struct Market {
    messages: Vec<pb::MarketMessage>,
}

#[tonic::async_trait]
impl MarketService for Market {
    type SessionStream = Messages;
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::MarketEvent, Status>> + Send>>;

    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn session(
        &self,
        _: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Messages>, Status> {
        let messages: Vec<Result<pb::MarketMessage, Status>> =
            self.messages.iter().cloned().map(Ok).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Slot 4 for the node hosting ids 10..13: a buyer filled 1.5 kWh at
/// 0.25/kWh, a household without an order, one missing.
fn cleared() -> ClearedSlot {
    let tariff = TariffConfig::default().slot(18, None);
    let grid = GridConfig::default();
    let fill = Fill { quantity: Wh(1500), value: Money::of(Wh(1500), PricePerKwh(250_000)) };
    let buyer = settle_household(2.5, Some(Side::Buy), fill, &tariff, &grid);
    let idle = settle_household(0.0004, None, Fill::default(), &tariff, &grid);
    ClearedSlot {
        slot: 4,
        clearing_price: Some(PricePerKwh(250_000)),
        matched: Wh(1500),
        settlements: vec![
            SettledHousehold { prosumer_id: 10, side: Some(Side::Buy), fill, settlement: buyer },
            SettledHousehold {
                prosumer_id: 11,
                side: None,
                fill: Fill::default(),
                settlement: idle,
            },
        ],
        missing: vec![12],
    }
}

fn message(w: pb::SlotCleared) -> pb::MarketMessage {
    pb::MarketMessage { msg: Some(pb::market_message::Msg::Cleared(w)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_cleared_is_decoded_whole_at_the_edge_and_a_malformed_one_refused() {
    let good = slot_cleared_to_wire(&cleared());
    let mut wrong_split = good.clone();
    wrong_split.settlements[0].p2p_bought_kwh = 1.4;
    let mut foreign = good.clone();
    foreign.settlements[1].prosumer_id = 13;
    let mut sold_and_bought = good.clone();
    sold_and_bought.settlements[0].p2p_sold_kwh = 1.5;
    let market = Market {
        messages: vec![
            message(good),
            message(wrong_split),
            message(foreign),
            message(sold_and_bought),
        ],
    };

    let listener = GrpcListener::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
    let url = listener.url(false);
    let services = Services::new(peergrid_proto::FILE_DESCRIPTOR_SET)
        .add_service(MarketServiceServer::new(market));
    let options = ServeOptions::plain(std::time::Duration::ZERO);
    let server =
        tokio::spawn(peergrid_runtime::serve(listener, services, std::future::pending(), options));
    let cfg = AgentConfig { market: url, insecure_no_auth: true, ..AgentConfig::default() };
    let mut client = MarketClient::connect(&cfg).await.unwrap();
    let resume = Resume {
        session_id: "s".into(),
        secret: "0".repeat(32),
        first_prosumer_id: 10,
        prosumer_count: 3,
    };
    let (_tx, mut rx) = client.open_session(&resume, &[]).await.unwrap();

    let Some(Inbound::Cleared(c)) = rx.next().await.unwrap() else {
        panic!("expected a SlotCleared")
    };
    assert_eq!(c, cleared(), "the market's settlements, to the bit, with their sides");

    let refusals = [
        "settlements[0].p2p_bought_kwh: must be 1.5 kWh for a buy filled 1500 Wh, got 1.4",
        "settlements[1].prosumer_id: 13 is not hosted by this node (ids 10..13)",
        "settlements[0].p2p_sold_kwh: must be 0 kWh for a buy filled 1500 Wh, got 1.5",
    ];
    for expected in refusals {
        let e = rx.next().await.unwrap_err();
        assert!(matches!(e, AgentError::Wire(_)), "{e:?}");
        assert_eq!(e.to_string(), format!("market sent invalid data: invalid {expected}"));
        assert!(e.is_retryable(), "a broken market message ends the session, not the node");
    }
    assert!(rx.next().await.unwrap().is_none(), "the market ended the stream");
    server.abort();
}
