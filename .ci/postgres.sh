#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the tests that prove the
# deployment path (PostgresSaver + PostgresStore). Installs Debian's postgresql if no
# server binaries are found. Prints the connection URL on stdout; logs go to stderr.
set -euo pipefail
PORT="${RLM_PG_PORT:-55432}"
DATA="${RLM_PG_DIR:-${TMPDIR:-/tmp}/rlm-graph-pg}"

bindir() {
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

BIN="$(bindir)"
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
  echo "postgres: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
  BIN="$(bindir)"
fi

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DATA" postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  echo "postgres: already running in $DATA" >&2
else
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U rlm --auth=trust >/dev/null
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
fi
echo "postgresql://rlm@127.0.0.1:$PORT/postgres"
