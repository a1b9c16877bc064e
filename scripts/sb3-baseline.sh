#!/usr/bin/env bash
# Stable-Baselines3 PPO on the same problem size and PPO settings as
# `peergrid run`, for a side-by-side throughput comparison on this machine
# (scripts/sb3_baseline.py says what it runs). Installs SB3 (pinned, without
# its optional extras; torch, gymnasium and numpy come from the project's
# virtualenv) into $PEERGRID_CACHE/sb3 on first use. Arguments go to the
# script, e.g. `scripts/sb3-baseline.sh --agents 4 64 --updates 10`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source "$ROOT/scripts/python-env.sh"
python_env
SB3="$PEERGRID_CACHE/sb3"
if ! PYTHONPATH="$SB3" "$PEERGRID_VENV/bin/python" -c 'import stable_baselines3' 2>/dev/null; then
  echo "== installing stable-baselines3 into $SB3" >&2
  "$PEERGRID_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$SB3" stable-baselines3==2.9.2
fi
cd "$ROOT"
PYTHONPATH="$SB3" exec "$PEERGRID_VENV/bin/python" -W ignore scripts/sb3_baseline.py "$@"
