#!/usr/bin/env bash
# Makes the base image the trainer's Dockerfile builds on
# (PEERGRID_BASE_IMAGE, default debian:bookworm-slim) available to the local
# Docker engine. Idempotent, in this order:
#   1. the engine already has it: nothing to do;
#   2. it can be pulled (ordinary online machines): pull it;
#   3. otherwise (no registry reachable): build an equivalent locally with
#      `debootstrap --variant=minbase bookworm`, slim it as the official
#      -slim image is slimmed (no docs, man pages, locales, apt lists), and
#      `docker import` it under the same name. About 75 s and 75 MB.
#
# The Debian mirror for debootstrap comes from this machine's own apt
# sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list);
# override it with PEERGRID_DEBIAN_MIRROR=URL. PEERGRID_BASE_IMAGE_NO_PULL=1
# skips step 2. Needs root (or sudo) for debootstrap; installs the
# debootstrap package with apt-get when it is missing.
set -euo pipefail

IMAGE="${PEERGRID_BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${PEERGRID_DEBIAN_SUITE:-bookworm}"
PULL_TIMEOUT_S="${PEERGRID_PULL_TIMEOUT_S:-60}"

die() { echo "base-image: $*" >&2; exit 1; }
log() { echo "base-image: $*" >&2; }

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unexpected argument '$1' (this script takes none; configure it with the variables above)" ;;
esac

command -v docker >/dev/null 2>&1 || die "needs the docker command and a running Docker engine"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer ('docker info' failed): start it, or check your permissions"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE is present: nothing to do"
  exit 0
fi

if [ "${PEERGRID_BASE_IMAGE_NO_PULL:-0}" != 1 ]; then
  log "pulling $IMAGE (at most ${PULL_TIMEOUT_S}s)"
  if timeout "$PULL_TIMEOUT_S" docker pull --quiet "$IMAGE" >/dev/null 2>&1; then
    log "pulled $IMAGE"
    exit 0
  fi
  log "cannot pull $IMAGE: building it locally with debootstrap"
fi

case "$IMAGE" in
  debian:"$SUITE"-slim | debian:"$SUITE") ;;
  *) die "cannot pull '$IMAGE' and only know how to build debian:$SUITE-slim locally: pull or build '$IMAGE' yourself, or unset PEERGRID_BASE_IMAGE" ;;
esac

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "debootstrap needs root: run this script as root or install sudo"
  SUDO=(sudo)
fi

# The mirror of this machine's apt sources that serves "$SUITE" itself (not
# -security or -updates): deb822 stanzas first, then one-line sources.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uri != "" && has_suite && !disabled) { print uri; found = 1; exit } uri = ""; has_suite = 0; disabled = 0 }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "enabled:" && tolower($2) == "no" { disabled = 1 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) print $i }
    ' "$f"
  done
}

MIRROR="${PEERGRID_DEBIAN_MIRROR:-$(apt_mirror | head -n1)}"
[ -n "$MIRROR" ] || die "no Debian mirror for '$SUITE' in /etc/apt/sources.list{,.d/*}: set PEERGRID_DEBIAN_MIRROR=URL of a Debian archive"
case "$MIRROR" in
  http://* | https://* | file:/*) ;;
  *) die "PEERGRID_DEBIAN_MIRROR must be an http://, https:// or file:/ URL, got '$MIRROR'" ;;
esac

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it: install debootstrap, or pull $IMAGE"
  log "installing debootstrap with apt-get"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
  fi
fi
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"

KEYRING=()
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && KEYRING=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/peergrid-base-image.XXXXXX")"
cleanup() { "${SUDO[@]}" rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

log "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
if ! "${SUDO[@]}" "$DEBOOTSTRAP" --variant=minbase "${KEYRING[@]}" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 20 "$WORK/debootstrap.log" >&2
  die "debootstrap failed (last lines above); check the mirror ($MIRROR) or set PEERGRID_DEBIAN_MIRROR"
fi

log "slimming the root file system"
# What the official -slim variant leaves out, and apt's caches and lists.
# shellcheck disable=SC2016 # expanded by the inner shell, with $1 = the rootfs
"${SUDO[@]}" sh -eu -c '
  cd "$1"
  rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian/* usr/share/linda/*
  find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/cache/debconf/*-old var/lib/dpkg/*-old
  rm -rf var/log/* tmp/* var/tmp/* root/.bash_history
  mkdir -p etc/dpkg/dpkg.cfg.d etc/apt/apt.conf.d
  printf "%s\n" "path-exclude /usr/share/doc/*" "path-include /usr/share/doc/*/copyright" \
    "path-exclude /usr/share/man/*" "path-exclude /usr/share/info/*" \
    "path-exclude /usr/share/locale/*" "path-include /usr/share/locale/locale.alias" >etc/dpkg/dpkg.cfg.d/docker
  printf "%s\n" "APT::Install-Recommends \"false\";" >etc/apt/apt.conf.d/docker-no-recommends
  : >etc/hostname
  : >etc/resolv.conf
' sh "$ROOTFS"

log "importing as $IMAGE"
"${SUDO[@]}" tar --numeric-owner --xattrs -C "$ROOTFS" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE, slimmed (peergrid deploy/base-image.sh)" \
    - "$IMAGE" >/dev/null
log "made $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
