#!/usr/bin/env bash
# Builds peergrid's container images from host-built binaries, idempotently:
#
#   peergrid/market-node  static market-node on scratch
#   peergrid/agent-node   static agent-node on scratch
#   peergrid/cli          static `peergrid` on scratch (operator client)
#   peergrid/trainer      trainer + the libtorch libraries it loads, on
#                         $PEERGRID_BASE_IMAGE (default debian:bookworm-slim)
#
# Usage: deploy/build-images.sh [--images market-node,agent-node,cli,trainer] [--tag TAG]
#
# The static binaries are linked against glibc with
# `-C target-feature=+crt-static --target x86_64-unknown-linux-gnu` in their
# own target directory ($PEERGRID_CACHE/target-static), the trainer with the
# project's libtorch ($PEERGRID_CACHE/venv, scripts/python-env.sh) in
# $CARGO_TARGET_DIR: a second run rebuilds nothing and every Docker layer
# comes from the cache. Each image's context is a staging directory under
# $PEERGRID_CACHE/images holding only what its Dockerfile copies. Images use
# the legacy builder (DOCKER_BUILDKIT=0) when buildx is missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"

ALL_IMAGES="market-node,agent-node,cli,trainer"
IMAGES="$ALL_IMAGES"
TAG="${PEERGRID_IMAGE_TAG:-latest}"
TARGET=x86_64-unknown-linux-gnu
STATIC_TARGET_DIR="${PEERGRID_STATIC_TARGET_DIR:-$PEERGRID_CACHE/target-static}"
STAGE="$PEERGRID_CACHE/images"

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }
usage() { sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --images) [ $# -ge 2 ] || die "--images needs a comma-separated list of: $ALL_IMAGES"; IMAGES="$2"; shift 2 ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; TAG="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
IFS=, read -r -a WANTED <<<"$IMAGES"
[ "${#WANTED[@]}" -gt 0 ] || die "--images is empty; choose from: $ALL_IMAGES"
for image in "${WANTED[@]}"; do
  case ",$ALL_IMAGES," in
    *",$image,"*) ;;
    *) die "unknown image '$image'; choose from: $ALL_IMAGES" ;;
  esac
done
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag '$TAG' is not a valid Docker tag"
wanted() { case ",$IMAGES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

need_cargo
command -v docker >/dev/null 2>&1 || die "needs the docker command and a running Docker engine"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer ('docker info' failed): start it, or check your permissions"
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
cd "$ROOT" || exit 1

# One build at a time per cache: two runs would race on the staging directories.
mkdir -p "$STAGE"
exec 9>"$STAGE/.lock"
flock 9

# Copies $1 to $2 unless $2 already has the same bytes (keeps big staged
# libraries untouched between runs).
stage_file() {
  if ! cmp -s "$1" "$2"; then
    cp -L "$1" "$2.tmp" && mv -f "$2.tmp" "$2"
  fi
}

# Builds image $1 from deploy/docker/$1.Dockerfile and context $2, then checks
# that it starts: `--version` of a static binary, ldd inside the trainer.
build_image() {
  local name="$1" context="$2" ref="peergrid/$1:$TAG" started=$SECONDS
  shift 2
  local out
  # Quiet on success (the legacy builder prints a deprecation notice each time).
  if ! out="$(docker build --quiet --file "deploy/docker/$name.Dockerfile" --tag "$ref" "$@" "$context" 2>&1)"; then
    echo "$out" >&2
    die "docker build of $ref failed (output above)"
  fi
  log "$ref: $(docker image inspect --format '{{.Size}}' "$ref" | awk '{printf "%.1f MB", $1 / 1e6}') ($((SECONDS - started)) s)"
}

static_binaries() {
  local bins=() packages=() b
  wanted market-node && bins+=(market-node) && packages+=(-p peergrid-market-node)
  wanted agent-node && bins+=(agent-node) && packages+=(-p peergrid-agent-node)
  wanted cli && bins+=(peergrid) && packages+=(-p peergrid-cli)
  [ "${#bins[@]}" -gt 0 ] || return 0
  log "cargo build (static glibc, $TARGET) in $STATIC_TARGET_DIR: ${bins[*]}"
  # No debug line tables in images (the release profile keeps them for
  # profiling on the host); symbol names stay for readable backtraces.
  # Without PEERGRID_TORCH_LIB (scripts/python-env.sh): build scripts that
  # see it add an rpath to torch, and glibc's static-PIE start-up aborts on
  # any DT_RUNPATH.
  env -u PEERGRID_TORCH_LIB RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$STATIC_TARGET_DIR" \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --locked --release --target "$TARGET" "${packages[@]}"
  for b in "${bins[@]}"; do
    local bin="$STATIC_TARGET_DIR/$TARGET/release/$b"
    # ldd lists no library (`=>`) for a static executable.
    if ldd "$bin" 2>&1 | grep -q '=>'; then
      die "$bin is dynamically linked (ldd lists libraries): the crt-static build did not take"
    fi
    "$bin" --version >/dev/null || die "$bin does not start (a static executable must run anywhere: see its --version)"
  done
}

static_image() { # image name, binary name
  local context="$STAGE/$1"
  mkdir -p "$context"
  stage_file "$STATIC_TARGET_DIR/$TARGET/release/$2" "$context/$2"
  build_image "$1" "$context"
  docker run --rm "peergrid/$1:$TAG" --version >/dev/null || die "peergrid/$1:$TAG does not start ('--version' failed)"
}

trainer_image() {
  # shellcheck source=scripts/python-env.sh
  source "$ROOT/scripts/python-env.sh"
  python_env
  log "cargo build (trainer, libtorch from $PEERGRID_VENV) in $CARGO_TARGET_DIR"
  cargo build --locked --release -p peergrid-trainer
  local bin="$CARGO_TARGET_DIR/release/trainer" context="$STAGE/trainer" venv
  [ -x "$bin" ] || die "no trainer binary at $bin after building peergrid-trainer"
  venv="$(realpath "$PEERGRID_VENV")"
  mkdir -p "$context/lib"
  # Every library the loader resolves for the trainer, transitively; those
  # inside the venv (torch/lib, nvidia/*/lib) go into the image, the rest
  # (glibc, libstdc++, libgcc) must come from the base image (checked below).
  local listing missing kept=() soname path
  listing="$(ldd "$bin")" || die "ldd $bin failed"
  missing="$(awk '$2 == "=>" && $3 == "not" { print $1 }' <<<"$listing")"
  [ -z "$missing" ] || die "the trainer needs libraries the loader cannot find: $missing"
  while read -r soname path; do
    case "$(realpath "$path")" in
      "$venv"/*)
        stage_file "$path" "$context/lib/$soname"
        kept+=("$soname")
        ;;
    esac
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' <<<"$listing")
  [ "${#kept[@]}" -gt 0 ] || die "ldd found no libtorch library for $bin: is it linked against the venv's torch?"
  # Drop libraries an older trainer needed and this one does not.
  local staged
  for staged in "$context"/lib/*; do
    [[ " ${kept[*]} " == *" $(basename "$staged") "* ]] || rm -f "$staged"
  done
  # The image needs no debug line tables (91 MB of a 98 MB binary).
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$bin" "$context/trainer.stripped"
    stage_file "$context/trainer.stripped" "$context/trainer"
    rm -f "$context/trainer.stripped"
  else
    stage_file "$bin" "$context/trainer"
  fi
  local base="${PEERGRID_BASE_IMAGE:-debian:bookworm-slim}"
  "$ROOT/deploy/base-image.sh"
  log "trainer libraries: ${kept[*]} ($(du -sh "$context/lib" | cut -f1))"
  build_image trainer "$context" --build-arg "BASE_IMAGE=$base"
  if docker run --rm --entrypoint ldd "peergrid/trainer:$TAG" /usr/local/bin/trainer | grep 'not found' >&2; then
    die "peergrid/trainer:$TAG lacks the libraries listed above: add them to the base image or to the copied set"
  fi
}

static_binaries
wanted market-node && static_image market-node market-node
wanted agent-node && static_image agent-node agent-node
wanted cli && static_image cli peergrid
wanted trainer && trainer_image
log "done: $(for i in "${WANTED[@]}"; do printf 'peergrid/%s:%s ' "$i" "$TAG"; done)"
