#!/usr/bin/env bash
# The main job: build peergrid and run the embedded simulation.
# Idempotent; installs nothing system-wide. Extra arguments go to `peergrid run`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source "$ROOT/scripts/python-env.sh"
need_cargo
python_env
cd "$ROOT"
cargo build --release --locked -p peergrid-cli
exec "$CARGO_TARGET_DIR/release/peergrid" run "$@"
