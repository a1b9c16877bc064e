//! The standard gRPC side services every peergrid server exposes: health
//! (`grpc.health.v1.Health`) and reflection (`grpc.reflection.v1` and the
//! older `v1alpha` that many tools still ask for), so `grpcurl` and
//! Kubernetes probes work against any node without local proto files.
//!
//! ```ignore
//! let (health, health_service) = peergrid_proto::services::health();
//! let (reflection_v1, reflection_v1alpha) = peergrid_proto::services::reflection()?;
//! Server::builder()
//!     .add_service(health_service)
//!     .add_service(reflection_v1)
//!     .add_service(reflection_v1alpha)
//!     .add_service(MarketServiceServer::new(market));
//! health.set_serving::<MarketServiceServer<Market>>().await;
//! ```

pub use tonic_health::pb::health_server::{Health, HealthServer};
pub use tonic_health::server::HealthReporter;
pub use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

use crate::FILE_DESCRIPTOR_SET;

/// Fully qualified names of the peergrid gRPC services (as health and
/// reflection know them).
pub const MARKET_SERVICE: &str = "peergrid.market.v1.MarketService";
pub const CONTROL_SERVICE: &str = "peergrid.control.v1.ControlService";
pub const LEARNER_SERVICE: &str = "peergrid.learner.v1.LearnerService";

/// A health reporter and the health service it drives. The overall status
/// (service `""`) starts as `SERVING`; mark each peergrid service with
/// `set_serving::<ItsServer<_>>()` once it is ready, `set_not_serving` while
/// draining on shutdown.
pub fn health() -> (HealthReporter, HealthServer<impl Health>) {
    tonic_health::server::health_reporter()
}

/// The v1 and v1alpha reflection services, serving every peergrid proto and
/// the reflection protocol itself.
#[allow(clippy::type_complexity)]
pub fn reflection() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}
