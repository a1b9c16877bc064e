//! Generates the gRPC code of the peergrid wire contract (`proto/` at the
//! repository root) with tonic-prost-build, using the `protoc` binary vendored
//! by `protoc-bin-vendored` so no system protoc is needed. It also writes the
//! encoded file descriptor set that the reflection service serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "../../proto/peergrid/common/v1/common.proto",
    "../../proto/peergrid/market/v1/market.proto",
    "../../proto/peergrid/control/v1/control.proto",
    "../../proto/peergrid/learner/v1/learner.proto",
    "../../proto/peergrid/policy/v1/policy.proto",
];
const INCLUDE: &str = "../../proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // prost-build runs the binary named by PROTOC. Setting it here pins the
    // vendored protoc even when a system one exists; the variable only
    // affects this (single-threaded) build-script process.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);

    // The protos live outside this package, so cargo does not watch them on
    // its own: without these lines an edited .proto leaves stale code.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No generated `Client::connect`: it would tie this crate to tonic's
        // transport. Nodes build a `tonic::transport::Endpoint` (timeouts,
        // keep-alive) and wrap the channel with `Client::new` or
        // `Client::with_interceptor`.
        .build_transport(false)
        .file_descriptor_set_path(out_dir.join("peergrid_descriptor.bin"))
        .compile_protos(PROTOS, &[INCLUDE])?;
    Ok(())
}
