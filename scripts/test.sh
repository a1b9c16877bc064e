#!/usr/bin/env bash
# The whole test suite: formatting, lints, dependency rules, unit, property,
# golden and end-to-end tests. Idempotent; this is what CI runs.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source "$ROOT/scripts/python-env.sh"
need_cargo
# libtorch for the trainer, tensorboard and kubernetes-validate for tests,
# grpcio and pytest for the Python client.
python_env
cd "$ROOT"
echo "== format"; cargo fmt --all --check
echo "== dependency rules"; scripts/check-deps.sh
echo "== clippy"; cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== doc tests"; cargo test --locked --workspace --doc
# The process-cluster tests start the workspace's binaries (market-node,
# trainer, agent-node): build them all, not only those of packages with tests.
echo "== binaries"; cargo build --locked --workspace --bins
# The Python client's tests start those binaries (CARGO_TARGET_DIR/debug);
# the trainer's libtorch is on LD_LIBRARY_PATH (python_env).
echo "== python client"
python_client
"$PEERGRID_VENV/bin/python" -m pytest --quiet -p no:cacheprovider clients/python/tests
# The test runner's summary must be the last thing printed: CI reads it.
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi
