# Sourced by scripts/test.sh and .ci/run: where caches live, outside the work tree, so a fresh
# clone on the same machine reuses Go, cargo and testbin builds.
NSH_CACHE_DIR="${NSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsh-mesh}"
export NSH_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NSH_CACHE_DIR/target}"
# Go keeps its module and build caches under $HOME by default (~/go/pkg/mod, ~/.cache/go-build).
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI runs clean checkouts against this shared target folder: incremental sessions of every past
# checkout would pile up there (41 GB seen on one machine), and CI gains little from them.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi
