#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the PostgreSQL tests, installing it first
# when the machine lacks it. Prints the URL to export as TEST_POSTGRES_URL, or nothing on failure
# (the PostgreSQL tests then skip and say how to enable them).
#   usage: eval "$(bash .ci/postgres.sh start DIR PORT)"; ... ; bash .ci/postgres.sh stop DIR
set -u
action=$1 dir=$2
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$action" = stop ]; then
  [ -d "$dir/data" ] && as_postgres "$(bindir)/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1
  exit 0
fi

port=${3:-55432}
if [ -z "$(bindir)" ] && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || true
fi
bin=$(bindir)
[ -n "$bin" ] || { echo "PostgreSQL is not installed; its tests will be skipped" >&2; exit 0; }
mkdir -p "$dir" && chmod 777 "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null || exit 0
as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || exit 0
echo "export TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres"
