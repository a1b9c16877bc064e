//! peergrid's wire layer: the code generated from `proto/` and the validated
//! conversions between wire and domain types.
//!
//! - [`pb`] holds the generated prost messages and tonic clients/servers, one
//!   module per proto package (`pb::market::v1` is `peergrid.market.v1`).
//!   Generated types never travel further than a node's `grpc.rs`: they are
//!   converted into `peergrid_core` types with the functions of [`convert`],
//!   which is where wire input is validated.
//! - [`error`] is the one error type of the wire boundary, [`WireError`], and
//!   its one mapping to `tonic::Status` codes.
//! - [`services`] names the services for health probes; [`FILE_DESCRIPTOR_SET`]
//!   is what every server's reflection describes (`peergrid_runtime::serve`).
//!
//! This crate owns no I/O, no tasks and no policy about which endpoint needs
//! which role; that is `peergrid-runtime` and the nodes.

pub mod convert;
pub mod error;
pub mod services;

pub use error::WireError;

/// The generated code, one module per proto package.
pub mod pb {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("peergrid.common.v1");
        }
    }
    pub mod market {
        pub mod v1 {
            tonic::include_proto!("peergrid.market.v1");
        }
    }
    pub mod control {
        pub mod v1 {
            tonic::include_proto!("peergrid.control.v1");
        }
    }
    pub mod learner {
        pub mod v1 {
            tonic::include_proto!("peergrid.learner.v1");
        }
    }
    pub mod policy {
        pub mod v1 {
            tonic::include_proto!("peergrid.policy.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of every peergrid proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("peergrid_descriptor");
