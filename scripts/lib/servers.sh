# Shared by scripts/test and scripts/bench: install Tansu and moto when missing, start one of each
# on free loopback ports, export their addresses, and stop them when the calling script exits.
# shellcheck shell=bash

TOOLS="${KAPPA_TOOLS:-$HOME/.cache/kappa-tools}"
TANSU_ROOT="$TOOLS/tansu-0.6.0"
TANSU="$TANSU_ROOT/bin/tansu"
LOGS="$(mktemp -d)"
pids=()

say() { printf '\033[1m%s:\033[0m %s\n' "$(basename "$0")" "$*" >&2; }

cleanup() {
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

export KAPPA_TANSU_BIN="$TANSU"
export KAPPA_TEST_BROKERS="127.0.0.1:$TANSU_PORT"
export KAPPA_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
say "tansu on $KAPPA_TEST_BROKERS, moto on $KAPPA_TEST_S3_ENDPOINT (logs in $LOGS)"
