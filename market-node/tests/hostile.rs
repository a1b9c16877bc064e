//! Hostile input at the market's gRPC edge (issue 12), over loopback:
//! authentication before decompression, one status for every size limit,
//! undecodable strings, a shutdown no client can hold up, and idle
//! connections beyond the connection cap.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{register, settings, Agent, TestMarket, AGENT};
use peergrid_market_node::MarketSettings;
use peergrid_proto::pb::market::v1 as pb;
use peergrid_proto::pb::market::v1::market_service_client::MarketServiceClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

/// A `RegisterRequest` whose `node_name` (field 1) is raw bytes, so the
/// test can send what the generated type cannot: invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRegister {
    #[prost(bytes = "vec", tag = "1")]
    node_name: Vec<u8>,
    #[prost(uint32, tag = "2")]
    prosumer_count: u32,
}

/// A `NodeMessage` whose string fields are raw bytes (`Join` is field 1 of
/// its oneof, `Hold` field 3), so a test can send invalid UTF-8 in them.
#[derive(Clone, PartialEq, prost::Message)]
struct RawNodeMessage {
    #[prost(message, optional, tag = "1")]
    join: Option<RawJoin>,
    #[prost(message, optional, tag = "3")]
    hold: Option<RawHold>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawJoin {
    #[prost(bytes = "vec", tag = "1")]
    session_id: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    prosumers: Vec<RawProsumerSummary>,
    #[prost(bytes = "vec", tag = "3")]
    resume_secret: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawProsumerSummary {
    #[prost(uint32, tag = "1")]
    prosumer_id: u32,
    #[prost(bytes = "vec", tag = "2")]
    kind: Vec<u8>,
    #[prost(double, tag = "3")]
    pv_kwp: f64,
    #[prost(double, tag = "4")]
    battery_kwh: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawHold {
    #[prost(uint64, tag = "1")]
    slot: u64,
    #[prost(bytes = "vec", tag = "2")]
    reason: Vec<u8>,
}

const INVALID_UTF8: &[u8] = &[b'n', 0xff, 0xfe];

/// A valid `Join` of the registered node `reg`, as raw bytes fields.
fn raw_join(reg: &pb::RegisterResponse) -> RawJoin {
    let agent = Agent::new(reg.first_prosumer_id, reg.prosumer_count, 4);
    RawJoin {
        session_id: reg.session_id.clone().into_bytes(),
        prosumers: agent
            .summaries()
            .into_iter()
            .map(|p| RawProsumerSummary {
                prosumer_id: p.prosumer_id,
                kind: p.kind.into_bytes(),
                pv_kwp: p.pv_kwp,
                battery_kwh: p.battery_kwh,
            })
            .collect(),
        resume_secret: reg.resume_secret.clone().into_bytes(),
    }
}

/// Opens a session stream sending `messages` (then holding the stream
/// open) and returns the status it ends with: the call's own status if
/// the market refuses it at once, else the one that ends the response
/// stream. A stream that ends with OK fails the test.
async fn session_end(market: &TestMarket, messages: Vec<RawNodeMessage>) -> Status {
    let mut grpc =
        tonic::client::Grpc::new(market.channel.clone()).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = tokio::spawn(async move {
        for m in messages {
            if tx.send(m).await.is_err() {
                return;
            }
        }
        // Keep the request stream open until the market ends the call.
        tx.closed().await;
    });
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    let codec = tonic_prost::ProstCodec::<RawNodeMessage, pb::MarketMessage>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/peergrid.market.v1.MarketService/Session",
    );
    let call =
        tokio::time::timeout(Duration::from_secs(60), grpc.streaming(request, path, codec)).await;
    let status = match call.expect("the market answers the session call within 60 s") {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(60), stream.message()).await;
                match next.expect("the market ends the session within 60 s") {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the session stream ended with OK and no message"),
                    Err(status) => break status,
                }
            }
        }
    };
    sender.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_session_message_ends_the_stream_with_resource_exhausted() {
    let market = TestMarket::start(settings()).await;
    let reg = register(&market, "big", 2).await;
    // 65 MiB of hold reason after a valid Join, beyond the 64 MiB limit.
    // Before the fix the stream ended with status OK and no message.
    let hold = RawHold { slot: 0, reason: vec![b'x'; 65 << 20] };
    let join = RawNodeMessage { join: Some(raw_join(&reg)), hold: None };
    let status =
        session_end(&market, vec![join, RawNodeMessage { join: None, hold: Some(hold.clone()) }])
            .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large") && status.message().contains("67108864"),
        "{}",
        status.message()
    );
    // An over-limit first message (the Join itself) is refused the same way.
    let status = session_end(&market, vec![RawNodeMessage { join: None, hold: Some(hold) }]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(!status.message().is_empty());
    market.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_session_message_is_invalid_argument_naming_the_field() {
    let market = TestMarket::start(settings()).await;
    let reg = register(&market, "utf8", 2).await;
    type Defect = fn(&mut RawJoin);
    let cases: [(Defect, &str); 3] = [
        (|j| j.session_id = INVALID_UTF8.to_vec(), "session_id"),
        (|j| j.resume_secret = INVALID_UTF8.to_vec(), "resume_secret"),
        (|j| j.prosumers[1].kind = INVALID_UTF8.to_vec(), "kind"),
    ];
    for (defect, field) in cases {
        let mut join = raw_join(&reg);
        defect(&mut join);
        let status =
            session_end(&market, vec![RawNodeMessage { join: Some(join), hold: None }]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let message = status.message();
        assert!(message.contains("UTF-8") && message.contains(field), "{field}: {message}");
    }
    assert_eq!(market.status().await.nodes, 0, "no node joined");
    // After a valid Join: the undecodable message ends the stream with the reason.
    let hold = RawHold { slot: 0, reason: INVALID_UTF8.to_vec() };
    let join = RawNodeMessage { join: Some(raw_join(&reg)), hold: None };
    let status =
        session_end(&market, vec![join, RawNodeMessage { join: None, hold: Some(hold) }]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("UTF-8") && status.message().contains("reason"),
        "{}",
        status.message()
    );
    market.stop().await;
}

/// A register request that inflates to `bytes` (its name is `bytes` zeros,
/// which gzip shrinks about a thousandfold).
fn bomb(bytes: usize) -> pb::RegisterRequest {
    pb::RegisterRequest { node_name: "0".repeat(bytes), prosumer_count: 1, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_bomb_without_a_token_is_refused_before_it_is_inflated() {
    let market = TestMarket::start(settings()).await;
    // 80 MiB inflated, beyond the 64 MiB limit: before the fix the market
    // inflated it (64 MiB of memory) and answered RESOURCE_EXHAUSTED; the
    // token check now runs on the headers, so the answer is UNAUTHENTICATED.
    let mut anonymous = MarketServiceClient::new(market.channel.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let status = anonymous.register(bomb(80 << 20)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // With a token the decompressed size is still capped, and the limit
    // answers RESOURCE_EXHAUSTED naming it.
    let mut agent = market
        .market(AGENT)
        .send_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let status = agent.register(bomb(80 << 20)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("size limit"), "{}", status.message());

    // Uncompressed and over the limit: RESOURCE_EXHAUSTED too (tonic says OUT_OF_RANGE).
    let mut plain = market.market(AGENT).max_encoding_message_size(usize::MAX);
    let status = plain.register(bomb(65 << 20)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{}", status.message());
    assert_eq!(market.status().await.nodes, 0, "nothing was registered");
    market.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    let market = TestMarket::start(settings()).await;
    let mut grpc = tonic::client::Grpc::new(market.channel.clone());
    grpc.ready().await.unwrap();
    let mut request =
        tonic::Request::new(RawRegister { node_name: vec![b'n', 0xff, 0xfe], prosumer_count: 1 });
    request.metadata_mut().insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    let codec = tonic_prost::ProstCodec::<RawRegister, pb::RegisterResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/peergrid.market.v1.MarketService/Register",
    );
    let status = grpc.unary(request, path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    assert_eq!(market.status().await.nodes, 0);
    market.stop().await;
}

/// `market-node` as a real process: SIGTERM while a client holds a Watch
/// stream and another holds a TCP connection that sent half an HTTP/2
/// preface. It must exit 0 (before the fix it waited for both forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_while_clients_hold_streams_and_half_sent_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_market-node"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dataset",
            "synthetic",
            "--shutdown-timeout-ms",
            "1000",
        ])
        .args(["--insecure-no-auth", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let channel = async {
        for _ in 0..600 {
            if let Ok(c) =
                tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("market-node did not start");
    }
    .await;
    let mut watch = MarketServiceClient::new(channel.clone())
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // A liveness bound, not a performance one: without the drain timeout
    // the process never exits while these clients stay.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("market-node still running 60 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The watcher was told the stream is over (or lost the connection), not left hanging.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the watch stream ended");
    drop(half);
}

/// One sample of `/metrics` at `addr` (the metrics listener is separate
/// from the gRPC one, so the cap does not apply to it).
fn scrape(addr: std::net::SocketAddr, sample: &str) -> Option<f64> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_for_metric(addr: std::net::SocketAddr, sample: &str, value: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = scrape(addr, sample);
        if now == Some(value) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {sample} = {value}, last {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 12: with 128 descriptors and 200 idle connections the market used
/// to spin and a Status call timed out. Now, with a cap of 64, the client's
/// connection keeps being answered and the connections over the cap are
/// closed and counted; a new client takes the place of an idle connection
/// that has waited a quarter of the handshake deadline, and the idle ones
/// are closed at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_answered_while_idle_connections_exceed_the_cap() {
    let market = TestMarket::start(MarketSettings {
        max_connections: Some(64),
        handshake_timeout_ms: 12_000,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..settings()
    })
    .await;
    let handle = market.handle.as_ref().unwrap();
    let (grpc, metrics) = (handle.grpc_addr.unwrap(), handle.metrics_addr.unwrap());
    assert_eq!(market.status().await.nodes, 0);
    wait_for_metric(metrics, "peergrid_connections_open", 1.0).await;

    let opened = std::time::Instant::now();
    let idle: Vec<std::net::TcpStream> =
        (0..200).map(|_| std::net::TcpStream::connect(grpc).unwrap()).collect();
    wait_for_metric(metrics, "peergrid_connections_refused_total{reason=\"cap\"}", 137.0).await;
    assert_eq!(scrape(metrics, "peergrid_connections_open"), Some(64.0));
    let status = tokio::time::timeout(Duration::from_secs(5), market.status()).await;
    assert!(status.is_ok(), "Status answered within 5 s while 200 idle connections are held");

    // After a quarter of the deadline a new client gets the place of an idle one.
    tokio::time::sleep(Duration::from_millis(3_500).saturating_sub(opened.elapsed())).await;
    let fresh = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = MarketServiceClient::with_interceptor(
        fresh,
        peergrid_runtime::BearerInterceptor::new(AGENT).unwrap(),
    );
    assert_eq!(client.status(pb::StatusRequest {}).await.unwrap().into_inner().nodes, 0);
    assert!(
        opened.elapsed() < Duration::from_secs(12),
        "the new client came in while the idle connections were held"
    );
    assert_eq!(scrape(metrics, "peergrid_connections_refused_total{reason=\"cap\"}"), Some(138.0));

    // The 62 idle connections left never send a preface: closed at the deadline.
    wait_for_metric(metrics, "peergrid_connections_handshake_timeouts_total", 62.0).await;
    wait_for_metric(metrics, "peergrid_connections_open", 2.0).await;
    assert_eq!(market.status().await.nodes, 0);
    drop(idle);
    market.stop().await;
}
