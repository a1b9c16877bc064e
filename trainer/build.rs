//! tch links libtorch dynamically and sets no rpath: without one, the
//! trainer's binaries and tests only start with torch's `lib/` on
//! `LD_LIBRARY_PATH`. torch-sys reports the directory it linked against
//! (`links = "tch"` → `DEP_TCH_LIBTORCH_LIB`); bake it in as an rpath. In a
//! container the libraries live elsewhere and `LD_LIBRARY_PATH` still wins
//! over nothing (RUNPATH is searched after it).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
