//! The test binaries link libtorch through peergrid-trainer, which sets no
//! rpath for its dependents: bake in torch's `lib/` when the build runs
//! with the project's Python environment (`scripts/python-env.sh` exports
//! PEERGRID_TORCH_LIB), so the tests also start without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=PEERGRID_TORCH_LIB");
    if let Ok(dir) = std::env::var("PEERGRID_TORCH_LIB") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
