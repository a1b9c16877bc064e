//! A stand-in external policy for the end-to-end tests: a real
//! `peergrid.policy.v1.PolicyService` on a loopback port that decodes each
//! `ActRequest` with the proto crate's validated conversion, records it, and
//! answers as told ([`Behaviour`]) — a fixed action, slowly, or not at all
//! (stopped, then started again on the same port).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use peergrid_core::policy::remote::{ActionBatch, ObservationBatch};
use peergrid_core::policy::Action;
use peergrid_proto::pb::policy::v1 as pb;
use peergrid_proto::pb::policy::v1::policy_service_server::{PolicyService, PolicyServiceServer};
use peergrid_runtime::{GrpcListener, ServeOptions, Services};
use tokio::sync::oneshot;

/// Charge as fast as the battery allows and offer nothing P2P: the effect
/// shows in the market (no P2P volume) and in every SoC the policy sees.
pub const CHARGE: Action = Action { battery: 1.0, quantity: -1.0, price: 0.0 };

/// How the stand-in answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    /// `action` for every prosumer, at once.
    Fixed(Action),
    /// `action` for every prosumer, after `delay`.
    Slow(Action, Duration),
}

#[derive(Clone)]
struct Shared {
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<ObservationBatch>>>,
}

#[tonic::async_trait]
impl PolicyService for Shared {
    async fn act(
        &self,
        request: tonic::Request<pb::ActRequest>,
    ) -> Result<tonic::Response<pb::ActResponse>, tonic::Status> {
        let batch = ObservationBatch::try_from(request.into_inner())?;
        let behaviour = *self.behaviour.lock().expect("not poisoned");
        let action = match behaviour {
            Behaviour::Fixed(action) => action,
            Behaviour::Slow(action, delay) => {
                tokio::time::sleep(delay).await;
                action
            }
        };
        let answer = ActionBatch {
            slot: batch.slot,
            prosumer_ids: batch.prosumer_ids.clone(),
            actions: vec![action; batch.prosumer_ids.len()],
        };
        self.seen.lock().expect("not poisoned").push(batch);
        Ok(tonic::Response::new(pb::ActResponse::from(&answer)))
    }
}

/// The stand-in service; dropping it stops serving.
pub struct StandInPolicy {
    shared: Shared,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl StandInPolicy {
    /// Serves on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> Result<StandInPolicy> {
        let shared = Shared { behaviour: Arc::new(Mutex::new(behaviour)), seen: Arc::default() };
        let mut policy = StandInPolicy { shared, addr: "127.0.0.1:0".parse()?, stop: None };
        policy.serve().await?;
        Ok(policy)
    }

    /// `http://127.0.0.1:PORT` (the same across [`stop`](Self::stop) and [`restart`](Self::restart)).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("not poisoned") = behaviour;
    }

    /// Every request answered so far (decoded and validated), in order.
    pub fn seen(&self) -> Vec<ObservationBatch> {
        self.shared.seen.lock().expect("not poisoned").clone()
    }

    /// Stops serving (the port closes: callers see the service gone).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.serve().await
    }

    /// Serves with the nodes' server kit (`peergrid_runtime::serve`); on
    /// [`stop`](Self::stop) open calls get a second to finish.
    async fn serve(&mut self) -> Result<()> {
        let listener = GrpcListener::bind(self.addr, None).await?;
        self.addr = listener.tcp_addr().expect("a TCP listener");
        let (stop, stopped) = oneshot::channel::<()>();
        let services = Services::new(peergrid_proto::FILE_DESCRIPTOR_SET)
            .add_service(PolicyServiceServer::new(self.shared.clone()));
        let stopped = async {
            let _ = stopped.await;
        };
        let options = ServeOptions::plain(Duration::from_secs(1));
        tokio::spawn(peergrid_runtime::serve(listener, services, stopped, options));
        self.stop = Some(stop);
        Ok(())
    }
}

impl Drop for StandInPolicy {
    fn drop(&mut self) {
        self.stop();
    }
}
