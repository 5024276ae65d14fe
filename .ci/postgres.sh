#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests that prove the deployment path
# (PostgresSaver + PostgresStore), one per clone: its data directory and Unix socket
# live in a folder keyed by the clone's path and it opens no TCP port, so clones that
# run `make test` at the same time never share (or drop) each other's tables.
#
#   .ci/postgres.sh run CMD...   start, run CMD with RLM_TEST_POSTGRES_URL set, stop
#   .ci/postgres.sh start        start (if not running) and print the connection URL
#   .ci/postgres.sh stop         stop it and remove its folder
#
# Installs Debian's postgresql if no server binaries are found. Logs go to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
# Keyed by the clone's path, in TMPDIR rather than the clone: a Unix socket path must
# stay under 108 bytes, and the postgres user must be able to reach the folder.
KEY="$(printf %s "$ROOT" | sha1sum | cut -c1-12)"
DATA="${RLM_PG_DIR:-${TMPDIR:-/tmp}/rlm-graph-pg-$KEY}"
URL="postgresql://rlm@/postgres?host=$DATA"

bindir() {
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  else
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
  fi
}

find_or_install() {
  BIN="$(bindir)"
  if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
    echo "postgres: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    BIN="$(bindir)"
  fi
}

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
  find_or_install
  if running; then
    echo "postgres: already running in $DATA" >&2
  else
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U rlm --auth=trust >/dev/null
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
      -o "-k $DATA -c listen_addresses= -c fsync=off" start >/dev/null
  fi
  echo "$URL"
}

stop() {
  BIN="$(bindir)"
  if [ -n "$BIN" ] && running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
  rm -rf "$DATA"
}

# Without a server the PostgreSQL tests skip and say why; the rest still run.
run() {
  if [ -n "${RLM_TEST_POSTGRES_URL:-}" ]; then
    exec "$@"
  fi
  local url
  # A child process, so that `set -e` holds inside it (an `if` condition disables it).
  if url="$("$0" start)"; then
    trap stop EXIT
    RLM_TEST_POSTGRES_URL="$url" "$@"
  else
    echo "postgres: could not start a server; its tests will skip (and fail in CI)" >&2
    "$@"
  fi
}

case "${1:-}" in
  run) shift; run "$@" ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 run CMD... | start | stop" >&2; exit 2 ;;
esac
