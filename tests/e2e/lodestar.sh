#!/usr/bin/env bash
# End-to-end run with real validator clients: a Lodestar 1.5.1 dev chain whose 8 validators
# hold no keys and sign only through Palisade.
#
#   throwaway PostgreSQL <- Palisade replicas A and B <- load balancer (lb.py) <- Lodestar VCs
#
# - `lodestar dev` (beacon node + validator client 1) and a second `lodestar validator`
#   (client 2) with the same 8 keys, phase0 -> altair -> bellatrix -> capella.
# - The balancer replays every block and attestation client 1 had signed with a different
#   head (double proposal, double vote, surround vote): each must be refused (412).
# - Replica A is killed (SIGKILL) mid-run; the balancer fails over to B.
#
# Passes only if the chain finalizes past epoch 3, blocks were proposed, no validator is
# slashed, Palisade answered no 5xx, and the independent checker finds every signature valid,
# nothing slashable signed, and everything signed recorded in the database.
#
# `tests/e2e/lodestar.sh threshold` runs the same chain through a 3-of-4 threshold group
# instead (deploy/threshold-local.sh: every key split, 4 share nodes each with its own SQLite
# database, mutual TLS, coordinators A and B behind the balancer): at the kill, coordinator A
# and share node 4 are killed together; the checker's database is the union of the exports of
# the three nodes left (every group signature was recorded by at least two of them).
#
# `tests/e2e/lodestar.sh install` only installs Lodestar (CI starts it early, in the
# background).
#
# Environment: PALISADE_E2E_LODESTAR (npm install cache, default /tmp/palisade-e2e-lodestar),
# PALISADE_E2E_WORK (run folder, default a new temp dir), PALISADE_E2E_BUDGET (seconds for the
# chain to finalize, default 300).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LODESTAR_DIR=${PALISADE_E2E_LODESTAR:-/tmp/palisade-e2e-lodestar}
WORK=${PALISADE_E2E_WORK:-$(mktemp -d /tmp/palisade-e2e.XXXXXX)}
BUDGET=${PALISADE_E2E_BUDGET:-300}
NETWORK_CFG="$ROOT/tests/data/lodestar-dev-minimal.yaml"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET/debug/palisade"
BENCH="$TARGET/debug/palisade-bench"
BN=http://127.0.0.1:9596
STARTED=$(date +%s)
MODE=${1:-replicas}
case "$MODE" in replicas|threshold|install) ;; *) echo "usage: $0 [replicas|threshold|install]"; exit 2 ;; esac
PIDS=()
PG_PID=""

log() { printf '[e2e %3ds] %s\n' $(( $(date +%s) - STARTED )) "$*"; }
fail() { log "FAIL: $*"; exit 1; }
FAILURES=()
check() { # condition message: collects failures so that every check runs
    if ! eval "$1"; then FAILURES+=("$2"); fi
}

cleanup() {
    local rc=$?
    set +e
    if [ ${#PIDS[@]} -gt 0 ]; then
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
        sleep 2
        for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    fi
    # Lodestar forks helpers: make sure nothing of it survives.
    pkill -KILL -f "$LODESTAR_DIR/node_modules" 2>/dev/null
    if [ "$MODE" = threshold ] && [ -d "$WORK/threshold" ]; then
        mkdir -p "$WORK/threshold-logs" && cp "$WORK"/threshold/*.log "$WORK/threshold-logs/" 2>/dev/null
        threshold down > /dev/null
    fi
    # PG_PID may be runuser's, which does not pass signals on: ask pg_ctl.
    [ -n "$PG_PID" ] && as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" stop -m immediate -w > /dev/null 2>&1
    wait 2>/dev/null
    if [ "$rc" -ne 0 ]; then
        # The cause of a failure belongs in the CI output, not only in a folder that may be gone.
        for f in "$WORK"/*.log "$WORK"/threshold-logs/*.log; do
            [ -s "$f" ] || continue
            printf '\n----- %s (last 40 lines) -----\n' "$f"
            tail -n 40 "$f"
        done
    fi
    log "stopped everything; logs are in $WORK"
}
as_postgres() {
    # From / : the checkout may sit in a folder the postgres user cannot enter.
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v initdb)")
trap cleanup EXIT

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ---------------------------------------------------------------- build and install
install_lodestar() { # into a fresh folder, moved into place only when complete
    [ -x "$LODESTAR_DIR/node_modules/.bin/lodestar" ] && return 0
    log "installing Lodestar 1.5.1 from npm into $LODESTAR_DIR"
    local tmp="$LODESTAR_DIR.partial.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    cp "$HERE/lodestar/package.json" "$HERE/lodestar/polyfill.cjs" "$tmp/"
    if ! (cd "$tmp" && npm install --no-audit --no-fund --foreground-scripts > "$WORK/npm.log" 2>&1); then
        tail -20 "$WORK/npm.log"; rm -rf "$tmp"; fail "npm install"
    fi
    rm -rf "$LODESTAR_DIR" && mv "$tmp" "$LODESTAR_DIR"
    # npm wrote absolute paths nowhere that matters; the .bin links are relative.
}
if [ "${1:-}" = install ]; then
    # Only the npm install (CI runs it in the background while it builds).
    install_lodestar
    log "Lodestar installed"
    exit 0
fi
log "building palisade and palisade-bench"
(cd "$ROOT" && cargo build --quiet --bin palisade --bin palisade-bench)
install_lodestar
export NODE_OPTIONS="--require $LODESTAR_DIR/polyfill.cjs"
LODESTAR="$LODESTAR_DIR/node_modules/.bin/lodestar"

# ---------------------------------------------------------------- signers
# The threshold group's recipe, on this run's folder, network, keys and the debug binary.
threshold() {
    TH_DIR="$WORK/threshold" TH_KEYSTORES="$ROOT/tests/data/test-keys/interop" TH_KEYS=8 \
        TH_NETWORK="$NETWORK_CFG" TH_COORDINATOR_A=9001 TH_COORDINATOR_B=9002 PALISADE_BIN="$BIN" \
        "$ROOT/deploy/threshold-local.sh" "$@"
}
node_curl() { # share node i, path: as a coordinator, with the node's API token
    curl -sf --cacert "$WORK/threshold/pki/ca.pem" --cert "$WORK/threshold/pki/coordinator.pem" \
        --key "$WORK/threshold/pki/coordinator.key" \
        -H "Authorization: Bearer $(cat "$WORK/threshold/node-$1/palisade-api-token.txt")" \
        "https://127.0.0.1:$((9300 + $1))$2"
}
if [ "$MODE" = threshold ]; then
    threshold up
    REPLICA_A=$(cat "$WORK/threshold/coordinator-A.pid")
    NODE_4=$(cat "$WORK/threshold/node-4.pid")
    log "3-of-4 group: share nodes on 9301-9304, coordinators A (9001) and B (9002)"
else
    # ---------------------------------------------------------------- PostgreSQL
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$WORK/pg"
    as_postgres "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 --locale=C -N > "$WORK/initdb.log" 2>&1
    as_postgres "$PG_BIN/postgres" -D "$WORK/pg" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories= > "$WORK/postgres.log" 2>&1 &
    PG_PID=$!
    for _ in $(seq 600); do "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE palisade" postgres
    DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/palisade"
    log "PostgreSQL on port $PG_PORT"

    # ---------------------------------------------------------------- Palisade replicas
    mkdir -p "$WORK/keys"
    cp "$ROOT"/tests/data/test-keys/interop/keystore-*.json "$WORK/keys/"
    cp "$ROOT/tests/data/test-keys/interop/password.txt" "$WORK/password.txt"
    start_replica() { # name port
        (cd "$WORK" && exec "$BIN" serve --http-port "$2" --network "$NETWORK_CFG" --database-url "$DB_URL" \
            --keystores-path "$WORK/keys" --keystores-password-file "$WORK/password.txt" \
            --api-token-file "$WORK/api-token.txt" --data-path "$WORK/replica-$1") > "$WORK/palisade-$1.log" 2>&1 &
        PIDS+=($!)
        # Ready, not just alive: Lodestar fetches the key list once, and keys decrypt in the background.
        for _ in $(seq 600); do curl -sf "http://127.0.0.1:$2/readyz" > /dev/null && return 0; sleep 0.1; done
        fail "replica $1 was not ready within 60 s: $(tail -5 "$WORK/palisade-$1.log")"
    }
    start_replica A 9001
    REPLICA_A=${PIDS[-1]}
    start_replica B 9002
    log "Palisade replicas A (9001) and B (9002) on one database"
fi

python3 "$HERE/lb.py" --listen 127.0.0.1:9000=vc1 --listen 127.0.0.1:9003=vc2 \
    --backend 127.0.0.1:9001 --backend 127.0.0.1:9002 \
    --log "$WORK/responses.jsonl" --stats "$WORK/lb-stats.json" --replay-from vc1 > "$WORK/lb.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do curl -sf http://127.0.0.1:9000/upcheck > /dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:9000/upcheck > /dev/null || fail "the load balancer did not start: $(tail -5 "$WORK/lb.log")"

# ---------------------------------------------------------------- Lodestar
PARAMS=(--params.SECONDS_PER_SLOT 3 --params.ALTAIR_FORK_EPOCH 1 --params.BELLATRIX_FORK_EPOCH 2
        --params.CAPELLA_FORK_EPOCH 3 --terminal-total-difficulty-override 0)
mkdir -p "$WORK/lodestar"
(cd "$WORK/lodestar" && exec "$LODESTAR" dev --genesisValidators 8 --startValidators 0..7 \
    --externalSigner.url http://127.0.0.1:9000 --externalSigner.fetch \
    --reset --dataDir "$WORK/lodestar/dev" --port 9100 --rest.port 9596 \
    --execution.engineMock "${PARAMS[@]}") > "$WORK/lodestar-dev.log" 2>&1 &
PIDS+=($!)
log "lodestar dev started (beacon node + validator client 1)"
for _ in $(seq 120); do curl -sf "$BN/eth/v1/node/version" > /dev/null && break; sleep 0.5; done
curl -sf "$BN/eth/v1/node/version" > /dev/null || fail "beacon node REST API did not come up: $(tail -5 "$WORK/lodestar-dev.log")"
(cd "$WORK/lodestar" && exec "$LODESTAR" validator --network dev --dataDir "$WORK/lodestar/vc2" \
    --beaconNodes "$BN" --externalSigner.url http://127.0.0.1:9003 --externalSigner.fetch \
    "${PARAMS[@]}") > "$WORK/lodestar-vc2.log" 2>&1 &
PIDS+=($!)
log "second validator client started with the same 8 keys"

# ---------------------------------------------------------------- run, failover, finality
CHAIN_START=$(date +%s)
KILLED_AT=""
FINALIZED=0
while true; do
    elapsed=$(( $(date +%s) - CHAIN_START ))
    if [ -z "$KILLED_AT" ] && [ "$elapsed" -ge 70 ]; then
        kill -KILL "$REPLICA_A"
        wait "$REPLICA_A" 2>/dev/null || true
        KILLED_AT=$elapsed
        if [ "$MODE" = threshold ]; then
            kill -KILL "$NODE_4"
            log "killed coordinator A and share node 4 (SIGKILL); B must sign with nodes 1 to 3"
        else
            log "killed replica A (SIGKILL); the balancer must fail over to B"
        fi
    fi
    FINALIZED=$(curl -sf "$BN/eth/v1/beacon/states/head/finality_checkpoints" | json 'd["data"]["finalized"]["epoch"]' 2>/dev/null || echo 0)
    HEAD=$(curl -sf "$BN/eth/v1/beacon/headers/head" | json 'd["data"]["header"]["message"]["slot"]' 2>/dev/null || echo 0)
    if [ $(( elapsed % 15 )) -lt 3 ]; then log "head slot $HEAD, finalized epoch $FINALIZED"; fi
    if [ -n "$KILLED_AT" ] && [ "$FINALIZED" -ge 4 ]; then break; fi
    if [ "$elapsed" -ge "$BUDGET" ]; then
        log "the chain did not finalize past epoch 3 within ${BUDGET}s"
        break
    fi
    sleep 3
done
log "finalized epoch $FINALIZED at head slot $HEAD"

# What the chain says, before it stops.
SLASHED=$(curl -sf "$BN/eth/v1/beacon/states/head/validators" | json 'sum(1 for v in d["data"] if v["validator"]["slashed"] or "slashed" in v["status"])')
VALIDATORS=$(curl -sf "$BN/eth/v1/beacon/states/head/validators" | json 'len(d["data"])')
BLOCKS=$(cat "$WORK/lodestar-dev.log" "$WORK/lodestar-vc2.log" | grep -c "Published block" || true)
sleep 3   # let the last replays through
if [ "$MODE" = threshold ]; then
    # Nothing may sign while the nodes' databases are read (an attestation signed between two
    # exports would be in the responses and in no export): the clients and the balancer stop
    # first. Then the nodes decide: their refusals, and the union of what the three left recorded.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    METRICS_B=$(node_curl 1 /metrics)
    for i in 1 2 3; do node_curl "$i" /api/v1/eth2/slashing-protection/export > "$WORK/export-node-$i.json"; done
    python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
merged, meta = {}, None
for i in (1, 2, 3):
    d = json.load(open(f"{work}/export-node-{i}.json"))
    meta = d["metadata"]
    for v in d["data"]:
        m = merged.setdefault(v["pubkey"], {"pubkey": v["pubkey"], "signed_blocks": [], "signed_attestations": []})
        m["signed_blocks"] += v["signed_blocks"]
        m["signed_attestations"] += v["signed_attestations"]
json.dump({"metadata": meta, "data": list(merged.values())}, open(f"{work}/export.json", "w"))
EOF
    mkdir -p "$WORK/threshold-logs" && cp "$WORK"/threshold/*.log "$WORK/threshold-logs/"
else
    METRICS_B=$(curl -sf http://127.0.0.1:9002/metrics)
    curl -sf -H "Authorization: Bearer $(cat "$WORK/api-token.txt")" \
        http://127.0.0.1:9002/api/v1/eth2/slashing-protection/export > "$WORK/export.json"
    for pid in "${PIDS[@]:2}"; do kill -TERM "$pid" 2>/dev/null || true; done
fi

# ---------------------------------------------------------------- checks
log "checking"
CHECKER_OK=true
"$BENCH" check --network "$NETWORK_CFG" --responses "$WORK/responses.jsonl" --export "$WORK/export.json" \
    > "$WORK/check.txt" 2>&1 || CHECKER_OK=false
cat "$WORK/check.txt"
python3 - "$WORK" <<'EOF' | tee "$WORK/summary.txt"
import json, sys, collections
work = sys.argv[1]
lines = [json.loads(l) for l in open(f"{work}/responses.jsonl")]
by = collections.Counter((l["source"], l["request"]["type"], l["status"]) for l in lines)
print("signatures by type (200s, all clients):")
for t, n in sorted(collections.Counter(l["request"]["type"] for l in lines if l["status"] == 200).items()):
    print(f"  {t:<40} {n}")
print("responses by client and status:")
for (src, st), n in sorted(collections.Counter((l["source"], l["status"]) for l in lines).items()):
    print(f"  {src:<9} {st}: {n}")
stats = json.load(open(f"{work}/lb-stats.json"))
print(f"failovers (requests retried on the other replica): {stats['failovers']}")
EOF
REFUSED_B=$(echo "$METRICS_B" | awk '/^palisade_slashing_refusals_total/ {s += $2} END {print s + 0}')
REPEATS_B=$(echo "$METRICS_B" | awk '/^palisade_signing_requests_total.*outcome="repeat"/ {s += $2} END {print s + 0}')
FIVEXX=$(cat "$WORK"/palisade-*.log "$WORK"/threshold-logs/*.log 2>/dev/null | grep -c "answered with a server error" || true)
REPLAYS=$(python3 -c "import json; print(sum(1 for l in open('$WORK/responses.jsonl') if json.loads(l)['source']=='replayer'))")
REPLAYS_NOT_412=$(python3 -c "import json; print(sum(1 for l in open('$WORK/responses.jsonl') if json.loads(l)['source']=='replayer' and json.loads(l)['status']!=412))")
FAILOVERS=$(json 'd["failovers"]' < "$WORK/lb-stats.json")

if [ "$MODE" = threshold ]; then
    SIGNER_B="share node 1"; KILLED="coordinator A and share node 4"
else
    SIGNER_B="replica B"; KILLED="replica A"
fi
cat <<EOF | tee -a "$WORK/summary.txt"
== end-to-end summary ($MODE) ==
epochs finalized:          $FINALIZED (head slot $HEAD)
blocks proposed:           $BLOCKS (published by the two validator clients)
validators slashed:        $SLASHED of $VALIDATORS
conflicting replays:       $REPLAYS sent, $REPLAYS_NOT_412 not refused
412 refusals ($SIGNER_B): $REFUSED_B
repeats ($SIGNER_B):      $REPEATS_B (the second client's identical requests)
5xx answered by Palisade:  $FIVEXX
failovers:                 $FAILOVERS ($KILLED killed at ${KILLED_AT}s)
total time:                $(( $(date +%s) - STARTED ))s
EOF

check '$CHECKER_OK' "the independent checker found violations (see above)"
check '[ "$FINALIZED" -ge 4 ]' "the chain did not finalize past epoch 3 (finalized $FINALIZED)"
check '[ -n "$KILLED_AT" ]' "$KILLED never killed"
check '[ "$BLOCKS" -gt 0 ]' "no block was proposed"
check '[ "$SLASHED" -eq 0 ]' "$SLASHED validators were slashed"
check '[ "$VALIDATORS" -eq 8 ]' "expected 8 validators, the chain has $VALIDATORS"
check '[ "$FIVEXX" -eq 0 ]' "Palisade answered $FIVEXX requests with a 5xx"
check '[ "$REPLAYS" -gt 0 ]' "no conflicting replay was sent"
check '[ "$REPLAYS_NOT_412" -eq 0 ]' "$REPLAYS_NOT_412 conflicting replays were not refused"
check '[ "$REFUSED_B" -gt 0 ]' "$SIGNER_B's metrics show no refusal"
check '[ "$FAILOVERS" -gt 0 ]' "no request failed over after replica A was killed"
if [ ${#FAILURES[@]} -gt 0 ]; then
    for f in "${FAILURES[@]}"; do log "FAIL: $f"; done
    exit 1
fi
log "PASS"
