//! The names of the peergrid gRPC services, as gRPC health and reflection
//! know them. Every peergrid server exposes health (`grpc.health.v1.Health`)
//! and reflection (`grpc.reflection.v1` and the older `v1alpha` that many
//! tools still ask for) over [`crate::FILE_DESCRIPTOR_SET`] through
//! `peergrid_runtime::serve`, so `grpcurl` and Kubernetes probes work against
//! any node without local proto files; probes ask for these names.

/// Fully qualified names of the peergrid gRPC services (as health and
/// reflection know them).
pub const MARKET_SERVICE: &str = "peergrid.market.v1.MarketService";
pub const CONTROL_SERVICE: &str = "peergrid.control.v1.ControlService";
pub const LEARNER_SERVICE: &str = "peergrid.learner.v1.LearnerService";
