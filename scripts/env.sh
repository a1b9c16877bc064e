# Sourced by the project's scripts: one place for paths and caches.
#
# PEERGRID_CACHE holds what is expensive to rebuild and safe to share between
# clones (the cargo target directory; later the libtorch virtualenv). Set it
# to reuse a warm cache; by default it lives under ~/.cache.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PEERGRID_CACHE="${PEERGRID_CACHE:-$HOME/.cache/peergrid}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PEERGRID_CACHE/target}"
mkdir -p "$PEERGRID_CACHE"

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "peergrid needs a Rust toolchain (cargo ≥ 1.85): install it with rustup, then re-run." >&2
      exit 1
    fi
  fi
}
