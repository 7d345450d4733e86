#!/usr/bin/env bash
# A 3-of-4 threshold group on one machine, on loopback ports (README "Threshold keys"):
#
#   demo keys (keystores/) --palisade keys split--> 4 shares each
#   share nodes 1..4 (each its own SQLite database; TLS with client certificates)
#   coordinators A and B (plain HTTP for validator clients) -> the 4 nodes over mutual TLS
#
#   deploy/threshold-local.sh up       split the demo keys, make the certificates, start it
#   deploy/threshold-local.sh smoke    sign through both coordinators (the signature is the
#                                      whole key's); one node stopped: still signs; two: 503
#   deploy/threshold-local.sh status   what runs
#   deploy/threshold-local.sh logs     the tail of every log
#   deploy/threshold-local.sh down     stop everything and delete its data
#
# TH_DIR (default /tmp/palisade-threshold: everything it creates, shares and certificates
# included), TH_NODE_PORT (9301: nodes on 9301-9304), TH_COORDINATOR_A, TH_COORDINATOR_B (9311,
# 9312), PALISADE_BIN (default the release binary under CARGO_TARGET_DIR or target/, built if
# missing), TH_KEYSTORES (a folder of keystore-<k>.json and password.txt, default the demo
# keys), TH_KEYS (how many of them, default 4), TH_NETWORK (default mainnet; `smoke` signs
# mainnet messages). Needs openssl and curl. tests/e2e/lodestar.sh threshold runs Lodestar on it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TH_DIR:-/tmp/palisade-threshold}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN=${PALISADE_BIN:-$TARGET/release/palisade}
NODE_PORT=${TH_NODE_PORT:-9301}
COORD_A=${TH_COORDINATOR_A:-9311}
COORD_B=${TH_COORDINATOR_B:-9312}
KEYS=${TH_KEYS:-4}
KEYSTORES=${TH_KEYSTORES:-$ROOT/keystores}
NETWORK=${TH_NETWORK:-mainnet}

say() { printf '[threshold] %s\n' "$*"; }
wait_ready() { # url, what
    for _ in $(seq 600); do curl -sf "$1/readyz" > /dev/null && return 0; sleep 0.1; done
    say "FAIL: $2 is not ready after 60 s: $(curl -s "$1/readyz")"; exit 1
}

certificates() {
    local d=$DIR/pki
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=palisade threshold demo CA" -keyout ca.key -out ca.pem 2> /dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=share node" \
            -keyout node.key -out node.csr 2> /dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > node.ext
        openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile node.ext -out node.pem 2> /dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=coordinator" \
            -keyout coordinator.key -out coordinator.csr 2> /dev/null
        printf 'extendedKeyUsage=clientAuth\n' > coordinator.ext
        openssl x509 -req -in coordinator.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile coordinator.ext -out coordinator.pem 2> /dev/null
        chmod 600 ./*.key
    )
}

up() {
    [ -d "$DIR" ] && { say "$DIR exists: run '$0 down' first"; exit 1; }
    if [ ! -x "$BIN" ]; then
        say "building the release binary ($BIN)"
        (cd "$ROOT" && cargo build --release --quiet --bin palisade)
    fi
    mkdir -p "$DIR"
    certificates
    say "certificates: a CA, the nodes' server certificate, the coordinators' client certificate ($DIR/pki)"
    local k i
    for k in $(seq 0 $((KEYS - 1))); do
        "$BIN" keys split --keystore "$KEYSTORES/keystore-$k.json" --password-file "$KEYSTORES/password.txt" \
            --threshold 3 --shares 4 --output-dir "$DIR/split-$k" --pbkdf2-rounds 16384 > /dev/null
        for i in 1 2 3 4; do
            mkdir -p "$DIR/node-$i/keys" "$DIR/node-$i/passwords"
            cp "$DIR/split-$k/share-$i/keystore.json" "$DIR/node-$i/keys/key-$k.json"
            cp "$DIR/split-$k/share-$i/password.txt" "$DIR/node-$i/passwords/key-$k.txt"
        done
    done
    say "split $KEYS keys 3-of-4 ($DIR/split-*)"
    for i in 1 2 3 4; do
        (cd "$DIR/node-$i" && exec "$BIN" serve --http-port $((NODE_PORT + i - 1)) --network "$NETWORK" \
            --keystores-path "$DIR/node-$i/keys" --keystores-passwords-path "$DIR/node-$i/passwords" \
            --tls-cert-file "$DIR/pki/node.pem" --tls-key-file "$DIR/pki/node.key" \
            --tls-client-ca-file "$DIR/pki/ca.pem" --data-path "$DIR/node-$i") > "$DIR/node-$i.log" 2>&1 &
        echo $! > "$DIR/node-$i.pid"
    done
    mkdir -p "$DIR/groups"
    local nodes
    nodes=$(printf '"https://127.0.0.1:%s",' $NODE_PORT $((NODE_PORT + 1)) $((NODE_PORT + 2)) $((NODE_PORT + 3)))
    for k in $(seq 0 $((KEYS - 1))); do
        cat > "$DIR/groups/key-$k.yaml" << EOF
type: threshold
groupFile: $DIR/split-$k/group.json
nodes: [${nodes%,}]
tlsClientCertFile: $DIR/pki/coordinator.pem
tlsClientKeyFile: $DIR/pki/coordinator.key
tlsCaFile: $DIR/pki/ca.pem
timeout: 2000
EOF
    done
    for c in A:$COORD_A B:$COORD_B; do
        mkdir -p "$DIR/coordinator-${c%%:*}"
        (cd "$DIR/coordinator-${c%%:*}" && exec "$BIN" serve --http-port "${c##*:}" --network "$NETWORK" \
            --key-config-path "$DIR/groups" --data-path "$DIR/coordinator-${c%%:*}") > "$DIR/coordinator-${c%%:*}.log" 2>&1 &
        echo $! > "$DIR/coordinator-${c%%:*}.pid"
    done
    for c in $COORD_A $COORD_B; do wait_ready "http://127.0.0.1:$c" "coordinator on $c"; done
    # The nodes decrypt their shares in the background: a node answers once it lists them all.
    for i in 1 2 3 4; do
        for _ in $(seq 600); do
            [ "$(curl -s --cacert "$DIR/pki/ca.pem" --cert "$DIR/pki/coordinator.pem" --key "$DIR/pki/coordinator.key" \
                "https://127.0.0.1:$((NODE_PORT + i - 1))/api/v1/eth2/publicKeys" | grep -o 0x | wc -l)" = "$KEYS" ] && break
            sleep 0.1
        done
    done
    say "share nodes on $NODE_PORT-$((NODE_PORT + 3)) (mutual TLS), coordinators on $COORD_A and $COORD_B"
    say "point validator clients at http://127.0.0.1:$COORD_A (or $COORD_B)"
}

sign() { # coordinator port, pubkey, body -> prints "code signature"
    curl -s -m 10 -o "$DIR/answer.json" -w '%{http_code}' -X POST -H 'content-type: application/json' \
        --data "$3" "http://127.0.0.1:$1/api/v1/eth2/sign/$2"
    printf ' %s\n' "$(grep -o '0x[0-9a-f]*' "$DIR/answer.json" || true)"
}

smoke() {
    local pk gvr randao a b code
    pk=$(curl -sf "http://127.0.0.1:$COORD_A/api/v1/eth2/publicKeys" | grep -o '0x[0-9a-f]*' | head -1)
    gvr=0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95
    randao() { printf '{"type":"RANDAO_REVEAL","fork_info":{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},"genesis_validators_root":"%s"},"randao_reveal":{"epoch":"%s"}}' "$gvr" "$1"; }
    # RANDAO reveals are deterministic: both coordinators must answer the same signature, which
    # only the whole key (or t shares of it) can make.
    a=$(sign "$COORD_A" "$pk" "$(randao 413000)")
    b=$(sign "$COORD_B" "$pk" "$(randao 413000)")
    say "coordinator A: $a"
    [ "${a%% *}" = 200 ] && [ "$a" = "$b" ] || { say "FAIL: the coordinators do not agree ($a / $b)"; exit 1; }
    # The same through a plain signer holding the key whole.
    mkdir -p "$DIR/whole"
    (cd "$DIR/whole" && exec "$BIN" serve --http-port $((COORD_B + 1)) --network mainnet \
        --keystores-path "$ROOT/keystores" --keystores-password-file "$ROOT/keystores/password.txt" \
        --data-path "$DIR/whole") > "$DIR/whole.log" 2>&1 &
    echo $! > "$DIR/whole.pid"
    wait_ready "http://127.0.0.1:$((COORD_B + 1))" "the plain signer"
    code=$(sign $((COORD_B + 1)) "$pk" "$(randao 413000)")
    [ "$code" = "$a" ] || { say "FAIL: the group's signature is not the whole key's ($a / $code)"; exit 1; }
    say "the group's signature is the whole key's"
    kill -TERM "$(cat "$DIR/node-4.pid")"
    code=$(sign "$COORD_A" "$pk" "$(randao 413001)")
    say "node 4 stopped: $code"
    [ "${code%% *}" = 200 ] || { say "FAIL: 3 of 4 nodes did not sign"; exit 1; }
    kill -TERM "$(cat "$DIR/node-3.pid")"
    code=$(sign "$COORD_A" "$pk" "$(randao 413002)")
    say "nodes 3 and 4 stopped: HTTP ${code%% *}"
    [ "${code%% *}" = 503 ] || { say "FAIL: 2 of 4 nodes answered ${code%% *}, not 503"; exit 1; }
    say "smoke passed"
}

status() {
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        if kill -0 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f" .pid): running"; else say "$(basename "$f" .pid): stopped"; fi
    done
}

running() { # processes of this deployment still alive (not zombies): pid, state, command
    ps -eo pid=,stat=,args= | awk -v dir="$DIR/" 'index($0, dir) && $2 !~ /^Z/ && !/awk -v dir/'
}

logs() {
    [ -d "$DIR" ] || return 0
    local f
    for f in "$DIR"/*.log; do
        [ -s "$f" ] || continue
        printf '\n----- %s (last 40 lines) -----\n' "$f"
        tail -n 40 "$f"
    done
}

down() {
    [ -d "$DIR" ] || { say "nothing to stop"; return 0; }
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        [ -z "$(running)" ] && break
        running | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null
        sleep 0.1
    done
    if [ -n "$(running)" ]; then
        say "FAIL: still running after the stop:"; running; return 1
    fi
    rm -rf "$DIR"
    say "stopped and removed $DIR"
}

case "${1:-}" in
    up) up ;;
    smoke) smoke ;;
    status) status ;;
    logs) logs ;;
    down) down ;;
    *) echo "usage: $0 up|smoke|status|logs|down"; exit 2 ;;
esac
