//! peergrid market-node: placeholder binary.
//!
//! The workspace reserves this crate so the layout and the dependency rules
//! (`scripts/check-deps.sh`) hold from the start. The node itself is built in
//! its own issue; until then this binary says so and exits with status 2
//! instead of pretending to run.

fn main() {
    eprintln!(
        "peergrid-market-node {}: not implemented yet; use `peergrid run` for the embedded reference simulation",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
