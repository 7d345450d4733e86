#!/usr/bin/env bash
# A small version of the reference HA deployment (docs/high-availability.md) on one machine,
# on loopback ports:
#
#   PostgreSQL primary (5501) --synchronous replication--> standby (5502)
#   Palisade replica A (9201) and B (9202) on the primary
#   load balancer (9200, tests/e2e/lb.py as a stand-in for HAProxy) -> A, B
#
#   deploy/ha-local.sh up       start it (demo keystores from keystores/)
#   deploy/ha-local.sh smoke    sign through the balancer; check the record reached the standby
#   deploy/ha-local.sh status   what runs
#   deploy/ha-local.sh down     stop everything and delete its data
#
# HA_DIR (default /tmp/palisade-ha) holds everything it creates.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${HA_DIR:-/tmp/palisade-ha}
BIN=${PALISADE_BIN:-$ROOT/target/debug/palisade}
PRIMARY=5501
STANDBY=5502
LB=9200
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v initdb)")

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_at() { "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -At -v ON_ERROR_STOP=1 -d "$2" -c "$3"; }
say() { printf '[ha] %s\n' "$*"; }

up() {
    [ -d "$DIR" ] && { say "$DIR exists: run '$0 down' first"; exit 1; }
    [ -x "$BIN" ] || (cd "$ROOT" && cargo build --quiet --bin palisade)
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"

    say "PostgreSQL primary on $PRIMARY (synchronous_commit=on, one synchronous standby)"
    as_pg "$PG_BIN/initdb" -D "$DIR/primary" -U postgres --auth=trust -E UTF8 --locale=C -N > "$DIR/initdb.log"
    cat >> "$DIR/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PRIMARY
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 4
synchronous_commit = on
synchronous_standby_names = 'standby1'
fsync = on
full_page_writes = on
EOF
    echo "host replication postgres 127.0.0.1/32 trust" >> "$DIR/primary/pg_hba.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start > /dev/null

    say "standby on $STANDBY (pg_basebackup, streaming, application_name=standby1)"
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY" -U postgres -D "$DIR/standby" -R -X stream
    echo "port = $STANDBY" >> "$DIR/standby/postgresql.conf"
    # pg_basebackup -R wrote primary_conninfo to postgresql.auto.conf, which wins: name the
    # standby there, as synchronous_standby_names expects.
    echo "primary_conninfo = 'host=127.0.0.1 port=$PRIMARY user=postgres application_name=standby1'" \
        >> "$DIR/standby/postgresql.auto.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/standby" -l "$DIR/standby.log" -w start > /dev/null
    for _ in $(seq 100); do
        [ "$(psql_at $PRIMARY postgres "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")" = sync ] && break
        sleep 0.1
    done
    state=$(psql_at $PRIMARY postgres "SELECT application_name || ' ' || sync_state FROM pg_stat_replication")
    say "replication: $state"
    [ "$state" = "standby1 sync" ] || { say "FAIL: no synchronous standby"; exit 1; }
    psql_at $PRIMARY postgres "CREATE DATABASE palisade" > /dev/null

    for r in A:9201 B:9202; do
        name=${r%%:*}; port=${r##*:}
        mkdir -p "$DIR/palisade-$name"
        (cd "$DIR/palisade-$name" && exec "$BIN" serve --http-port "$port" \
            --database-url "postgres://postgres@127.0.0.1:$PRIMARY/palisade" \
            --keystores-path "$ROOT/keystores" --keystores-password-file "$ROOT/keystores/password.txt" \
            --api-token-file "$DIR/api-token.txt") > "$DIR/palisade-$name.log" 2>&1 &
        echo $! > "$DIR/palisade-$name.pid"
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
        say "Palisade replica $name on $port: $(curl -s "http://127.0.0.1:$port/readyz")"
    done

    python3 "$ROOT/tests/e2e/lb.py" --listen "127.0.0.1:$LB=clients" \
        --backend 127.0.0.1:9201 --backend 127.0.0.1:9202 \
        --log "$DIR/lb-responses.jsonl" --stats "$DIR/lb-stats.json" > "$DIR/lb.log" 2>&1 &
    echo $! > "$DIR/lb.pid"
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$LB/upcheck" > /dev/null && break; sleep 0.1; done
    say "load balancer on $LB -> 9201, 9202"
    say "point validator clients at http://127.0.0.1:$LB"
}

smoke() {
    local pk gvr body
    pk=$(curl -sf "http://127.0.0.1:$LB/api/v1/eth2/publicKeys" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
    gvr=0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95
    body=$(printf '{"type":"ATTESTATION","fork_info":{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},"genesis_validators_root":"%s"},"attestation":{"slot":"13230000","index":"0","beacon_block_root":"0x%064d","source":{"epoch":"413436","root":"0x%064d"},"target":{"epoch":"413437","root":"0x%064d"}}}' "$gvr" 1 2 3)
    for replica in 9201 9202; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
            --data "$body" "http://127.0.0.1:$replica/api/v1/eth2/sign/$pk")
        say "attestation through replica $replica: HTTP $code"
    done
    # The same message twice (one per replica): recorded once, signed twice with one signature.
    local rows
    rows=$(psql_at $STANDBY palisade "SELECT count(*) FROM signed_attestations")
    say "records on the synchronous standby: $rows"
    [ "$rows" -ge 1 ] || { say "FAIL: the standby has no record"; exit 1; }
    conflicting=$(echo "$body" | sed 's/"beacon_block_root":"0x0*1"/"beacon_block_root":"0x'"$(printf '%064d' 9)"'"/')
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
        --data "$conflicting" "http://127.0.0.1:$LB/api/v1/eth2/sign/$pk")
    say "a conflicting attestation through the balancer: HTTP $code (412 expected)"
    [ "$code" = 412 ] || { say "FAIL"; exit 1; }
    say "smoke test passed"
}

status() {
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        if kill -0 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f" .pid): running"; else say "$(basename "$f" .pid): stopped"; fi
    done
    for d in primary standby; do
        [ -d "$DIR/$d" ] && say "$d: $(as_pg "$PG_BIN/pg_ctl" -D "$DIR/$d" status > /dev/null && echo running || echo stopped)"
    done
}

down() {
    [ -d "$DIR" ] || { say "nothing to stop"; return 0; }
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for d in standby primary; do
        [ -d "$DIR/$d" ] && as_pg "$PG_BIN/pg_ctl" -D "$DIR/$d" -m fast -w stop > /dev/null 2>&1 || true
    done
    sleep 1
    rm -rf "$DIR"
    say "stopped and removed $DIR"
}

case "${1:-}" in
    up) up ;;
    smoke) smoke ;;
    status) status ;;
    down) down ;;
    *) echo "usage: $0 up|smoke|status|down"; exit 2 ;;
esac
