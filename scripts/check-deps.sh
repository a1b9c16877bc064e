#!/usr/bin/env bash
# Enforces the crate dependency rules of ARCHITECTURE.md with `cargo tree`:
#  - peergrid-core and peergrid-eval depend on nothing async, gRPC or libtorch;
#  - peergrid-eval sits on the core only (no proto, runtime or node crate);
#  - the nodes never depend on each other;
#  - only peergrid-trainer depends on tch / torch-sys (the CLI, the cluster and the
#    end-to-end tests only through it; the nodes not at all).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
need_cargo
cd "$ROOT"
fail=0
deps_of() { cargo tree --locked -e normal -p "$1" --prefix none --format '{p}' | awk '{print $1}' | sort -u; }

forbidden_in_pure='^(tokio|tonic|tonic-.*|prost|prost-.*|tch|torch-sys|actix|actix-.*|async-std|futures|hyper|mio)$'
for pure in peergrid-core peergrid-eval; do
  if bad=$(deps_of "$pure" | grep -E "$forbidden_in_pure"); then
    echo "check-deps: $pure must not depend on: $bad" >&2; fail=1
  fi
done
if bad=$(deps_of peergrid-eval | grep -E '^peergrid-(proto|runtime|agent-node|market-node|trainer|cli|e2e)$'); then
  echo "check-deps: peergrid-eval must not depend on $bad" >&2; fail=1
fi
# The shared libraries sit below the nodes: proto and runtime never depend
# on a node, and neither on the other's layer above it.
for lib in peergrid-proto peergrid-runtime; do
  if bad=$(deps_of "$lib" | grep -E '^peergrid-(agent-node|market-node|trainer|cli|e2e)$'); then
    echo "check-deps: $lib must not depend on $bad" >&2; fail=1
  fi
done
if deps_of peergrid-proto | grep -qx peergrid-runtime; then echo "check-deps: peergrid-proto must not depend on peergrid-runtime" >&2; fail=1; fi
nodes='peergrid-agent-node peergrid-market-node peergrid-trainer'
for n in $nodes; do
  for m in $nodes; do
    [ "$n" = "$m" ] && continue
    if deps_of "$n" | grep -qx "$m"; then echo "check-deps: $n must not depend on $m" >&2; fail=1; fi
  done
done
# libtorch: only peergrid-trainer names tch directly; the binaries that run
# the whole system (the `peergrid` CLI, the end-to-end tests) reach it only
# through the trainer; nothing else links it at all (agent- and market-node
# images carry no libtorch).
direct_deps() { cargo tree --locked -e normal -p "$1" --depth 1 --prefix none --format '{p}' | awk '{print $1}' | sort -u; }
for pkg in $(cargo metadata --locked --no-deps --format-version 1 | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
  case "$pkg" in
    peergrid-trainer) continue ;;
    peergrid-cli | peergrid-cluster | peergrid-e2e)
      if direct_deps "$pkg" | grep -qE '^(tch|torch-sys)$'; then echo "check-deps: $pkg must reach libtorch only through peergrid-trainer" >&2; fail=1; fi ;;
    *)
      if deps_of "$pkg" | grep -qE '^(tch|torch-sys)$'; then echo "check-deps: only peergrid-trainer may link libtorch, not $pkg" >&2; fail=1; fi ;;
  esac
done
[ $fail = 0 ] && echo "check-deps: dependency rules hold"
exit $fail
