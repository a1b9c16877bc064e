# Sourced by the scripts that need Python packages (libtorch for the trainer,
# tensorboard, kubernetes-validate and pytest for tests, the Python client):
# creates or updates the project's virtualenv at $PEERGRID_CACHE/venv from
# scripts/requirements.txt, idempotently (a stamp holds the hash of the
# requirements it was made from), and exports what a tch build and the
# trainer binaries need:
#   PEERGRID_VENV, PATH (venv first), LIBTORCH_USE_PYTORCH=1,
#   PEERGRID_TORCH_LIB (torch's lib/ directory) and LD_LIBRARY_PATH.
# Requires scripts/env.sh to be sourced first.
python_env() {
  export PEERGRID_VENV="${PEERGRID_VENV:-$PEERGRID_CACHE/venv}"
  local req="$ROOT/scripts/requirements.txt" stamp="$PEERGRID_VENV/.peergrid-requirements"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$PEERGRID_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    local py
    py="$(command -v python3 || true)"
    if [ -z "$py" ]; then
      echo "peergrid needs python3 (≥ 3.10) with the venv module to install libtorch." >&2
      exit 1
    fi
    echo "== python: installing $(grep -cv '^\s*\(#\|$\)' "$req") packages into $PEERGRID_VENV (first time: a few GB, several minutes)" >&2
    "$py" -m venv "$PEERGRID_VENV"
    "$PEERGRID_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
  export PATH="$PEERGRID_VENV/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
  PEERGRID_TORCH_LIB="$("$PEERGRID_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export PEERGRID_TORCH_LIB
  export LD_LIBRARY_PATH="$PEERGRID_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Installs the Python client (clients/python) into the virtualenv, again only
# when its sources, the protos or the requirements changed (a stamp holds
# their hash) or it does not import. Its gRPC stubs are generated from proto/
# during the install by the virtualenv's own grpcio-tools and setuptools (no
# build isolation, so nothing is fetched). Requires python_env first.
python_client() {
  local stamp="$PEERGRID_VENV/.peergrid-client" want
  want="$(cd "$ROOT" && { find proto -name '*.proto'; find clients/python/src/peergrid -maxdepth 1 -type f;
    echo clients/python/pyproject.toml clients/python/setup.py scripts/requirements.txt | tr ' ' '\n'; } |
    LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] ||
    ! "$PEERGRID_VENV/bin/python" -c 'import peergrid.control.v1.control_pb2_grpc' 2>/dev/null; then
    echo "== python: installing the peergrid client (clients/python) into $PEERGRID_VENV" >&2
    "$PEERGRID_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation "$ROOT/clients/python"
    echo "$want" >"$stamp"
  fi
}
