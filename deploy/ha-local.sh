#!/usr/bin/env bash
# A small version of the reference HA deployment (docs/high-availability.md) on one machine,
# on loopback ports:
#
#   PostgreSQL primary --synchronous replication, ANY 1 of 2--> standbys 1 and 2
#   Palisade replicas A and B on the primary
#   HAProxy (deploy/haproxy/palisade.cfg as shipped: /readyz checks, retry-on 503) -> A, B
#
#   deploy/ha-local.sh up       start it (demo keystores from keystores/)
#   deploy/ha-local.sh smoke    sign through the balancer; check the record reached a standby
#                               and survives losing one of them
#   deploy/ha-local.sh status   what runs
#   deploy/ha-local.sh logs     the tail of every log
#   deploy/ha-local.sh down     stop everything and delete its data
#
# Every path and port can be set: HA_DIR (default /tmp/palisade-ha: everything it creates,
# logs and the API token included), HA_PG_PRIMARY, HA_PG_STANDBY1, HA_PG_STANDBY2 (5501-5503),
# HA_REPLICA_A, HA_REPLICA_B (9201, 9202), HA_LB (9200), PALISADE_BIN (default the release
# binary under CARGO_TARGET_DIR or target/, built if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${HA_DIR:-/tmp/palisade-ha}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN=${PALISADE_BIN:-$TARGET/release/palisade}
PRIMARY=${HA_PG_PRIMARY:-5501}
STANDBY=${HA_PG_STANDBY1:-5502}
STANDBY2=${HA_PG_STANDBY2:-5503}
REPLICA_A=${HA_REPLICA_A:-9201}
REPLICA_B=${HA_REPLICA_B:-9202}
LB=${HA_LB:-9200}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v initdb)")

# From / : the checkout may sit in a folder the postgres user cannot enter.
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
psql_at() { "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -At -v ON_ERROR_STOP=1 -d "$2" -c "$3"; }
say() { printf '[ha] %s\n' "$*"; }
# The replicas that answer four requests through the balancer, one name a line.
served_by() {
    local i
    for i in 1 2 3 4; do
        curl -s -m 2 -D - -o /dev/null "http://127.0.0.1:$LB/upcheck" | tr -d '\r' | awk 'tolower($1) == "x-served-by:" {print $2}'
    done
}

up() {
    [ -d "$DIR" ] && { say "$DIR exists: run '$0 down' first"; exit 1; }
    if [ ! -x "$BIN" ]; then
        say "building the release binary ($BIN)"
        (cd "$ROOT" && cargo build --release --quiet --bin palisade)
    fi
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"

    say "PostgreSQL primary on $PRIMARY (synchronous_commit=on, ANY 1 of two synchronous standbys)"
    as_pg "$PG_BIN/initdb" -D "$DIR/primary" -U postgres --auth=trust -E UTF8 --locale=C -N > "$DIR/initdb.log"
    cat >> "$DIR/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PRIMARY
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 4
synchronous_commit = on
synchronous_standby_names = 'ANY 1 (standby1, standby2)'
fsync = on
full_page_writes = on
EOF
    echo "host replication postgres 127.0.0.1/32 trust" >> "$DIR/primary/pg_hba.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start > /dev/null

    for sb in standby1:$STANDBY standby2:$STANDBY2; do
        name=${sb%%:*}; port=${sb##*:}
        say "$name on $port (pg_basebackup, streaming)"
        as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY" -U postgres -D "$DIR/$name" -R -X stream
        echo "port = $port" >> "$DIR/$name/postgresql.conf"
        # pg_basebackup -R wrote primary_conninfo to postgresql.auto.conf, which wins: name the
        # standby there, as synchronous_standby_names expects.
        echo "primary_conninfo = 'host=127.0.0.1 port=$PRIMARY user=postgres application_name=$name'" \
            >> "$DIR/$name/postgresql.auto.conf"
        as_pg "$PG_BIN/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w start > /dev/null
    done
    for _ in $(seq 100); do
        [ "$(psql_at $PRIMARY postgres "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'")" = 2 ] && break
        sleep 0.1
    done
    state=$(psql_at $PRIMARY postgres "SELECT string_agg(application_name || ' ' || sync_state, ', ' ORDER BY application_name) FROM pg_stat_replication")
    say "replication: $state"
    [ "$state" = "standby1 quorum, standby2 quorum" ] || { say "FAIL: the standbys are not synchronous candidates"; exit 1; }
    psql_at $PRIMARY postgres "CREATE DATABASE palisade" > /dev/null
    # A login role per replica, so that the smoke test can take one replica's database away.
    psql_at $PRIMARY postgres "CREATE ROLE replica_a LOGIN SUPERUSER; CREATE ROLE replica_b LOGIN SUPERUSER" > /dev/null

    for r in A:$REPLICA_A B:$REPLICA_B; do
        name=${r%%:*}; port=${r##*:}
        mkdir -p "$DIR/palisade-$name"
        (cd "$DIR/palisade-$name" && exec "$BIN" serve --http-port "$port" \
            --database-url "postgres://replica_$(echo "$name" | tr AB ab)@127.0.0.1:$PRIMARY/palisade" \
            --keystores-path "$ROOT/keystores" --keystores-password-file "$ROOT/keystores/password.txt" \
            --api-token-file "$DIR/api-token.txt" --data-path "$DIR/palisade-$name") > "$DIR/palisade-$name.log" 2>&1 &
        echo $! > "$DIR/palisade-$name.pid"
        # Keys decrypt in the background: wait for readiness (60 s: a loaded debug build is slow).
        for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
        curl -sf "http://127.0.0.1:$port/readyz" > /dev/null \
            || { say "FAIL: replica $name is not ready after 60 s: $(curl -s "http://127.0.0.1:$port/readyz")"; exit 1; }
        say "Palisade replica $name on $port: $(curl -s "http://127.0.0.1:$port/readyz")"
    done

    # The configuration the docs show, as shipped; only the addresses come from here.
    cp "$ROOT/deploy/haproxy/palisade.cfg" "$DIR/haproxy.cfg"
    PALISADE_LISTEN="127.0.0.1:$LB" PALISADE_REPLICA_1="127.0.0.1:$REPLICA_A" PALISADE_REPLICA_2="127.0.0.1:$REPLICA_B" \
        haproxy -db -f "$DIR/haproxy.cfg" > "$DIR/haproxy.log" 2>&1 &
    echo $! > "$DIR/haproxy.pid"
    # Up when both replicas passed HAProxy's /readyz check (rise 2: about 0.5 s).
    for _ in $(seq 100); do [ "$(served_by | sort -u | wc -l)" = 2 ] && break; sleep 0.1; done
    [ "$(served_by | sort -u | wc -l)" = 2 ] || { say "FAIL: HAProxy does not send to both replicas: $(served_by | sort -u | tr '\n' ' ')"; exit 1; }
    say "load balancer on $LB -> $REPLICA_A, $REPLICA_B"
    say "point validator clients at http://127.0.0.1:$LB"
    say "logs: $DIR/*.log; admin token: $DIR/api-token.txt"
}

smoke() {
    local pk gvr body
    pk=$(curl -sf "http://127.0.0.1:$LB/api/v1/eth2/publicKeys" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
    gvr=0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95
    att() { # source target
        printf '{"type":"ATTESTATION","fork_info":{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},"genesis_validators_root":"%s"},"attestation":{"slot":"%s","index":"0","beacon_block_root":"0x%064d","source":{"epoch":"%s","root":"0x%064d"},"target":{"epoch":"%s","root":"0x%064d"}}}' \
            "$gvr" $(($2 * 32)) 1 "$1" 2 "$2" 3
    }
    body=$(att 413436 413437)
    for replica in $REPLICA_A $REPLICA_B; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
            --data "$body" "http://127.0.0.1:$replica/api/v1/eth2/sign/$pk")
        say "attestation through replica $replica: HTTP $code"
        [ "$code" = 200 ] || { say "FAIL: replica $replica did not sign"; exit 1; }
    done
    # The same message twice (one per replica): recorded once, signed twice with one signature.
    # A commit waits until one standby has flushed it; replaying it there may take a moment more.
    local rows rows2 lsn
    lsn=$(psql_at $PRIMARY palisade "SELECT pg_current_wal_lsn()")
    for _ in $(seq 100); do
        rows=$(psql_at $STANDBY palisade "SELECT count(*) FROM signed_attestations" 2>/dev/null || echo 0)
        rows2=$(psql_at $STANDBY2 palisade "SELECT count(*) FROM signed_attestations" 2>/dev/null || echo 0)
        [ $((rows + rows2)) -ge 1 ] && break
        sleep 0.1
    done
    say "records on the standbys: $rows and $rows2 (a commit waits for at least one; primary at $lsn)"
    [ $((rows + rows2)) -ge 1 ] || { say "FAIL: no standby has the record after 10 s"; exit 1; }
    # Losing one synchronous standby stops nothing: the other confirms commits.
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/standby2" -m immediate -w stop > /dev/null
    next=$(att 413437 413438)
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H 'content-type: application/json' \
        --data "$next" "http://127.0.0.1:$LB/api/v1/eth2/sign/$pk")
    say "an attestation with one standby lost: HTTP $code"
    [ "$code" = 200 ] || { say "FAIL: losing one standby stopped signing"; exit 1; }
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/standby2" -l "$DIR/standby2.log" -w start > /dev/null
    conflicting=$(echo "$body" | sed 's/"beacon_block_root":"0x0*1"/"beacon_block_root":"0x'"$(printf '%064d' 9)"'"/')
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
        --data "$conflicting" "http://127.0.0.1:$LB/api/v1/eth2/sign/$pk")
    say "a conflicting attestation through the balancer: HTTP $code (412 expected)"
    [ "$code" = 412 ] || { say "FAIL"; exit 1; }
    # Replica A loses its database (its role may no longer log in, its sessions are ended):
    # signings sent to it in the next moment get 503 and are retried on B (retry-on 503), then
    # HAProxy's /readyz check leaves A out. Every signing through the balancer succeeds.
    psql_at $PRIMARY postgres "ALTER ROLE replica_a NOLOGIN; SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'replica_a'" > /dev/null
    local ok=0 n
    for n in 1 2 3 4 5 6; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H 'content-type: application/json' \
            --data "$(att $((413437 + n)) $((413438 + n)))" "http://127.0.0.1:$LB/api/v1/eth2/sign/$pk")
        [ "$code" = 200 ] && ok=$((ok + 1))
    done
    local ready_a=200
    for _ in $(seq 100); do
        ready_a=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$REPLICA_A/readyz")
        [ "$ready_a" = 503 ] && break
        sleep 0.1
    done
    say "replica A without its database: /readyz $ready_a; $ok of 6 signings through the balancer answered 200"
    [ "$ready_a" = 503 ] || { say "FAIL: replica A still says it is ready"; exit 1; }
    [ "$ok" = 6 ] || { say "FAIL: the balancer passed on a replica's refusal"; exit 1; }
    psql_at $PRIMARY postgres "ALTER ROLE replica_a LOGIN" > /dev/null
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$REPLICA_A/readyz")" = 200 ] && break
        sleep 0.1
    done
    say "replica A with its database again: /readyz $(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$REPLICA_A/readyz")"
    say "smoke test passed"
}

status() {
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        if kill -0 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f" .pid): running"; else say "$(basename "$f" .pid): stopped"; fi
    done
    for d in primary standby1 standby2; do
        [ -d "$DIR/$d" ] && say "$d: $(as_pg "$PG_BIN/pg_ctl" -D "$DIR/$d" status > /dev/null && echo running || echo stopped)"
    done
}

running() { # processes of this deployment still alive (not zombies): pid, state, command
    ps -eo pid=,stat=,args= | awk -v dir="$DIR/" 'index($0, dir) && $2 !~ /^Z/ && !/awk -v dir/'
}

logs() { # the tail of every log of the deployment (for a failed CI run)
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
    for d in standby1 standby2 primary; do
        [ -d "$DIR/$d" ] && as_pg "$PG_BIN/pg_ctl" -D "$DIR/$d" -m immediate -w stop > /dev/null 2>&1 || true
    done
    for f in "$DIR"/*.pid; do
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
