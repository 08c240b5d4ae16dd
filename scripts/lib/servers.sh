# Shared by scripts/test and scripts/bench: install Tansu and moto when missing, start one of each
# and a temporary PostgreSQL cluster and a Redis server on free loopback ports, export their addresses, and stop them
# when the calling script exits.
# shellcheck shell=bash

TOOLS="${KAPPA_TOOLS:-$HOME/.cache/kappa-tools}"
TANSU_ROOT="$TOOLS/tansu-0.6.0"
TANSU="$TANSU_ROOT/bin/tansu"
LOGS="$(mktemp -d)"
pids=()

say() { printf '\033[1m%s:\033[0m %s\n' "$(basename "$0")" "$*" >&2; }

PG_DATA=""
cleanup() {
  if [[ -n "$PG_DATA" ]]; then
    "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

if [[ ! -x "$TANSU" ]]; then
  say "installing Tansu 0.6.0 into $TANSU_ROOT (about 8 minutes, once)"
  cargo install tansu --locked --version 0.6.0 --features dynostore --root "$TANSU_ROOT"
fi

if ! command -v moto_server >/dev/null 2>&1 || ! moto_server --help >/dev/null 2>&1; then
  say "installing moto's S3 server (pip install 'moto[server]')"
  python3 -m pip install --quiet 'moto[server]'
  hash -r
fi

# Iceberg test tables are written by pyiceberg (scripts/iceberg_tables.py).
if ! python3 -c 'import pyiceberg, pyarrow, sqlalchemy' >/dev/null 2>&1; then
  say "installing pyiceberg (pip install 'pyiceberg[pyarrow,sql-sqlite]')"
  python3 -m pip install --quiet 'pyiceberg[pyarrow,sql-sqlite]'
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port name logfile
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  say "$2 did not start on port $1; its log:"; cat "$3" >&2; exit 1
}

TANSU_PORT=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
  --storage-engine memory://tansu/ >"$LOGS/tansu.log" 2>&1 &
pids+=($!)
wait_port "$TANSU_PORT" tansu "$LOGS/tansu.log"

MOTO_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
pids+=($!)
wait_port "$MOTO_PORT" moto_server "$LOGS/moto.log"

# PostgreSQL: a temporary cluster of the machine's server binaries, trust auth on loopback only.
PG_BIN="${KAPPA_PG_BIN:-}"
if [[ -z "$PG_BIN" ]]; then
  for dir in /usr/local/bin /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then PG_BIN="$dir"; break; fi
  done
fi
if [[ -z "$PG_BIN" ]]; then
  say "PostgreSQL's server binaries (initdb, pg_ctl, postgres) not found: apt-get install -y postgresql, or set KAPPA_PG_BIN"
  exit 1
fi
as_postgres=()
PG_DIR="$(mktemp -d)"
if [[ "$(id -u)" == 0 ]]; then
  # initdb refuses to run as root: the cluster belongs to the postgres user.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$PG_DIR"
  as_postgres=(runuser -u postgres --)
fi
"${as_postgres[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U kappa --auth=trust >"$LOGS/initdb.log" 2>&1 \
  || { say "initdb failed; its log:"; cat "$LOGS/initdb.log" >&2; exit 1; }
PG_PORT=$(free_port)
PG_DATA="$PG_DIR/data"
"${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
  || { say "PostgreSQL did not start; its log:"; cat "$PG_DIR/postgres.log" >&2; exit 1; }

# Redis: Debian's redis-server, installed when missing.
if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server (apt-get)"
  apt-get install -y redis-server >"$LOGS/apt-redis.log" 2>&1 \
    || { say "apt-get install redis-server failed (its log: $LOGS/apt-redis.log); install it, then run again"; exit 1; }
fi
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$LOGS/redis.log" 2>&1 &
pids+=($!)
wait_port "$REDIS_PORT" redis-server "$LOGS/redis.log"

export KAPPA_TANSU_BIN="$TANSU"
export KAPPA_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT"
export KAPPA_TEST_POSTGRES="postgres://kappa@127.0.0.1:$PG_PORT/postgres"
export KAPPA_TEST_BROKERS="127.0.0.1:$TANSU_PORT"
export KAPPA_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
say "tansu on $KAPPA_TEST_BROKERS, moto on $KAPPA_TEST_S3_ENDPOINT, PostgreSQL on port $PG_PORT, Redis on port $REDIS_PORT (logs in $LOGS, $PG_DIR)"
