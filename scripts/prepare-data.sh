#!/usr/bin/env bash
#! Fetches the CityLearn 1.8.0 wheel and regenerates data/citylearn2022/.
#!
#! Owns: the download step (cached in .cache/citylearn/, which git ignores)
#! and the call into scripts/prepare_citylearn.py, which does the transform.
#! Must never install the wheel: its declared dependencies are ancient and
#! we only need the CSV files inside it, so the wheel is read as a zip.
#! Idempotent: a cached wheel is reused; the output is byte-for-byte stable.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="$repo_root/.cache/citylearn"
wheel_name="CityLearn-1.8.0-py3-none-any.whl"
out_dir="$repo_root/data/citylearn2022"

mkdir -p "$cache_dir"
if [[ ! -f "$cache_dir/$wheel_name" ]]; then
    # Download into a temporary directory first so that an interrupted
    # download never leaves a truncated wheel in the cache.
    tmp_dir="$(mktemp -d)"
    trap 'rm -rf "$tmp_dir"' EXIT
    echo "downloading citylearn==1.8.0 from PyPI (no deps, not installed)" >&2
    python3 -m pip download --no-deps --only-binary=:all: citylearn==1.8.0 -d "$tmp_dir" >&2
    mv "$tmp_dir/$wheel_name" "$cache_dir/$wheel_name"
else
    echo "reusing cached $cache_dir/$wheel_name" >&2
fi

python3 "$repo_root/scripts/prepare_citylearn.py" --wheel "$cache_dir/$wheel_name" --out "$out_dir"
