#!/usr/bin/env bash
# Builds peergrid's container images from host-built binaries, idempotently:
#
#   peergrid/market-node  static market-node on scratch
#   peergrid/agent-node   static agent-node on scratch
#   peergrid/trainer      trainer + the libtorch libraries it loads, on
#                         $PEERGRID_BASE_IMAGE (default debian:bookworm-slim)
#   peergrid/cli          the trainer image + `peergrid` (operator client;
#                         it links libtorch too); needs the trainer image
#
# Usage: deploy/build-images.sh [--images market-node,agent-node,cli,trainer] [--tag TAG]
#
# The static binaries are linked against glibc with
# `-C target-feature=+crt-static --target x86_64-unknown-linux-gnu` in their
# own target directory ($PEERGRID_CACHE/target-static), trainer and peergrid
# with the project's libtorch ($PEERGRID_CACHE/venv, scripts/python-env.sh)
# in $CARGO_TARGET_DIR: a second run rebuilds nothing and every Docker layer
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

# Builds image $1 from deploy/docker/$1.Dockerfile and context $2 (further
# arguments go to docker build).
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

# The unprivileged user every image runs as.
IMAGE_UID=65532

# Stages $1/state.tar: the empty directory $2 (absolute, e.g.
# /var/lib/peergrid/agent) owned by $IMAGE_UID with mode 0700, its parents
# by root. A FROM scratch image cannot RUN mkdir/chown: its Dockerfile ADDs
# this tar, which both builders unpack with the owners it records. Fixed
# mtimes and order keep the bytes, hence the layer cache, the same each run.
stage_state_dir() {
  local context="$1" dir="${2#/}" tree
  tree="$(mktemp -d "${TMPDIR:-/tmp}/peergrid-state.XXXXXX")"
  mkdir -p "$tree/$dir"
  local parents=() p="$dir"
  while [ "$(dirname "$p")" != . ]; do
    p="$(dirname "$p")"
    parents=("$p" "${parents[@]}")
  done
  local common=(--format=gnu --numeric-owner --no-recursion --mtime=@0 -C "$tree")
  tar -cf "$context/state.tar.new" "${common[@]}" --owner=0 --group=0 --mode=0755 "${parents[@]}"
  tar -rf "$context/state.tar.new" "${common[@]}" --owner="$IMAGE_UID" --group="$IMAGE_UID" --mode=0700 "$dir"
  rm -rf "$tree"
  stage_file "$context/state.tar.new" "$context/state.tar"
  rm -f "$context/state.tar.new"
}

# Fails unless directory $2 in image $1 is owned by $IMAGE_UID (a named or
# anonymous volume mounted there inherits owner and mode from the image).
check_owned() {
  local id listing
  id="$(docker create "$1")" || die "cannot create a container of $1"
  listing="$(docker export "$id" | tar -tvf - --numeric-owner "${2#/}/" 2>/dev/null | head -n1)" || true
  docker rm "$id" >/dev/null
  case "$listing" in
    d*" $IMAGE_UID/$IMAGE_UID "*) ;;
    *) die "$1: $2 is not a directory owned by $IMAGE_UID:$IMAGE_UID (got: '${listing:-nothing}')" ;;
  esac
}

static_image() { # image name, binary name[, state directory]
  local context="$STAGE/$1"
  mkdir -p "$context"
  stage_file "$STATIC_TARGET_DIR/$TARGET/release/$2" "$context/$2"
  [ -z "${3:-}" ] || stage_state_dir "$context" "$3"
  build_image "$1" "$context"
  docker run --rm "peergrid/$1:$TAG" --version >/dev/null || die "peergrid/$1:$TAG does not start ('--version' failed)"
  [ -z "${3:-}" ] || check_owned "peergrid/$1:$TAG" "$3"
}

# Copies binary $1 to $2 without its debug line tables (most of a release
# binary's size) when objcopy is there.
stage_stripped() {
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$1" "$2.stripped"
    stage_file "$2.stripped" "$2"
    rm -f "$2.stripped"
  else
    stage_file "$1" "$2"
  fi
}

# The libraries the loader resolves for binary $1 inside the venv
# (torch/lib, nvidia/*/lib), transitively, as "soname path" lines; the rest
# (glibc, libstdc++, libgcc) must come from the base image (checked after
# the build). Fails on a library the loader cannot find.
venv_libraries() {
  local listing missing venv soname path
  venv="$(realpath "$PEERGRID_VENV")"
  listing="$(ldd "$1")" || die "ldd $1 failed"
  missing="$(awk '$2 == "=>" && $3 == "not" { print $1 }' <<<"$listing")"
  [ -z "$missing" ] || die "$1 needs libraries the loader cannot find: $missing"
  while read -r soname path; do
    case "$(realpath "$path")" in "$venv"/*) echo "$soname $path" ;; esac
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' <<<"$listing")
}

# Fails when binary $2 inside image $1 misses a shared library.
check_loadable() {
  if docker run --rm --entrypoint ldd "$1" "$2" | grep 'not found' >&2; then
    die "$1 lacks the libraries listed above for $2: add them to the base image or to the copied set"
  fi
}

libtorch_binaries() {
  # shellcheck source=scripts/python-env.sh
  source "$ROOT/scripts/python-env.sh"
  python_env
  local packages=(-p peergrid-trainer)
  wanted cli && packages+=(-p peergrid-cli)
  log "cargo build (libtorch from $PEERGRID_VENV) in $CARGO_TARGET_DIR: ${packages[*]}"
  cargo build --locked --release "${packages[@]}"
}

trainer_image() {
  local bin="$CARGO_TARGET_DIR/release/trainer" context="$STAGE/trainer"
  [ -x "$bin" ] || die "no trainer binary at $bin after building peergrid-trainer"
  mkdir -p "$context/lib"
  local kept=() soname path staged
  while read -r soname path; do
    stage_file "$path" "$context/lib/$soname"
    kept+=("$soname")
  done < <(venv_libraries "$bin")
  [ "${#kept[@]}" -gt 0 ] || die "ldd found no libtorch library for $bin: is it linked against the venv's torch?"
  # Drop libraries an older trainer needed and this one does not.
  for staged in "$context"/lib/*; do
    [[ " ${kept[*]} " == *" $(basename "$staged") "* ]] || rm -f "$staged"
  done
  stage_stripped "$bin" "$context/trainer"
  local base="${PEERGRID_BASE_IMAGE:-debian:bookworm-slim}"
  "$ROOT/deploy/base-image.sh"
  log "trainer libraries: ${kept[*]} ($(du -sh "$context/lib" | cut -f1))"
  build_image trainer "$context" --build-arg "BASE_IMAGE=$base"
  check_loadable "peergrid/trainer:$TAG" /usr/local/bin/trainer
}

cli_image() {
  local context="$STAGE/cli" soname path name bin
  mkdir -p "$context"
  for name in peergrid peergrid-run; do
    bin="$CARGO_TARGET_DIR/release/$name"
    [ -x "$bin" ] || die "no $name binary at $bin after building peergrid-cli"
    # The trainer image must already hold every venv library these load.
    while read -r soname path; do
      [ -f "$STAGE/trainer/lib/$soname" ] || die "$name needs $soname, which the trainer image lacks"
    done < <(venv_libraries "$bin")
    stage_stripped "$bin" "$context/$name"
  done
  build_image cli "$context" --build-arg "TRAINER_IMAGE=peergrid/trainer:$TAG"
  check_loadable "peergrid/cli:$TAG" /usr/local/bin/peergrid
  check_loadable "peergrid/cli:$TAG" /usr/local/bin/peergrid-run
  docker run --rm "peergrid/cli:$TAG" --version >/dev/null || die "peergrid/cli:$TAG does not start ('--version' failed)"
}

# The cli image is the trainer image plus two binaries.
if wanted cli && ! wanted trainer; then
  IMAGES="$IMAGES,trainer"
  WANTED+=(trainer)
fi
static_binaries
wanted market-node && static_image market-node market-node
# The agent-node keeps its session and households there (PEERGRID_AGENT_STATE_DIR).
wanted agent-node && static_image agent-node agent-node /var/lib/peergrid/agent
if wanted trainer; then
  libtorch_binaries
  trainer_image
fi
wanted cli && cli_image
log "done: $(for i in "${WANTED[@]}"; do printf 'peergrid/%s:%s ' "$i" "$TAG"; done)"
