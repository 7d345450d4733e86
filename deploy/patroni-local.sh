#!/usr/bin/env bash
# The database tier of the reference HA deployment on an existing HA engine, on one machine:
#
#   etcd (one member) <- Patroni x3 managing PostgreSQL nodes 1..3
#       synchronous_mode + synchronous_mode_strict: a commit is acknowledged only once a
#       synchronous standby has it, and only a synchronous standby is ever promoted; both
#       standbys are candidates (Patroni hands the role to the other if one is lost)
#   HAProxy -> the leader, chosen by Patroni's REST health check (GET /primary)
#   Palisade replicas on HAProxy (started by the drill: palisade-bench faults)
#
#   deploy/patroni-local.sh up                 start etcd, Patroni x3, HAProxy
#   deploy/patroni-local.sh drill [SECONDS]    the fault harness on it: 3 replicas, 4 clients on
#                                              different heads; the leader killed, then cut off
#   deploy/patroni-local.sh kill-leader        SIGKILL the leader's Patroni and PostgreSQL (the
#                                              node dies); returns once writes go through again
#   deploy/patroni-local.sh partition-leader   stop the leader's Patroni (SIGSTOP): its lock
#                                              expires, a standby is promoted; resume it after
#   deploy/patroni-local.sh status | logs | down
#
# The fault commands print `fault-at-ms <unix ms>` when they inject the fault (after waiting
# for the cluster to be healthy), for the harness to time recovery from.
#
# Settings (environment): PATRONI_DIR (default /tmp/palisade-patroni, everything it creates:
# data, logs, configs), PATRONI_PG_PORTS (5511 5512 5513), PATRONI_REST_PORTS (8011 8012 8013),
# PATRONI_ETCD_PORT (2479; the peer port is the next one), PATRONI_HAPROXY_PORT (5510),
# PATRONI_SYNC (on; `off` for asynchronous replication, to see what that risks),
# PALISADE_BENCH (default the debug palisade-bench under CARGO_TARGET_DIR or target/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF="$ROOT/deploy/patroni-local.sh"
DIR=${PATRONI_DIR:-/tmp/palisade-patroni}
read -r -a PG_PORTS <<< "${PATRONI_PG_PORTS:-5511 5512 5513}"
read -r -a REST_PORTS <<< "${PATRONI_REST_PORTS:-8011 8012 8013}"
ETCD=${PATRONI_ETCD_PORT:-2479}
ETCD_PEER=$((ETCD + 1))
HAPROXY=${PATRONI_HAPROXY_PORT:-5510}
SYNC=${PATRONI_SYNC:-on}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BENCH=${PALISADE_BENCH:-$TARGET/debug/palisade-bench}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v initdb)")

say() { printf '[patroni %s] %s\n' "$(date +%T)" "$*"; }
AS_PG=(); [ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
# From / : the checkout may sit in a folder the postgres user cannot enter.
as_pg() { (cd / && "${AS_PG[@]}" "$@"); }
now_ms() { date +%s%3N; }
psql_ha() { PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -h 127.0.0.1 -p "$HAPROXY" -U postgres -At -v ON_ERROR_STOP=1 -d postgres -c "$1"; }

node_conf() { # n
    local i=$1 pg=${PG_PORTS[$1]} rest=${REST_PORTS[$1]} sync_mode=true
    [ "$SYNC" = off ] && sync_mode=false
    cat <<EOF
scope: palisade
namespace: /palisade/
name: node$((i + 1))
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
etcd3:
  hosts: 127.0.0.1:$ETCD
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: $sync_mode
    synchronous_mode_strict: $sync_mode
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      parameters:
        fsync: 'on'
        full_page_writes: 'on'
        synchronous_commit: 'on'
        wal_log_hints: 'on'
        max_connections: 300
  initdb:
    - encoding: UTF8
    - locale: C
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $DIR/node$((i + 1))
  bin_dir: $PG_BIN
  pgpass: $DIR/pgpass$((i + 1))
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: postgres, password: postgres}
    rewind: {username: postgres, password: postgres}
  parameters:
    unix_socket_directories: '$DIR/sock$((i + 1))'
  pg_hba:
    - host replication postgres 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
EOF
}

start_node() { # n: Patroni in a session of its own, so that its whole process group (runuser,
    # Patroni, its helpers) can be frozen, resumed and stopped as one; the pid file holds the group
    local i=$1
    mkdir -p "$DIR/sock$((i + 1))"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR/sock$((i + 1))"
    # From / (the checkout may sit in a folder the postgres user cannot enter); the subshell
    # becomes the session, so nothing else holds this script's output open.
    (cd / || exit 1
     exec setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$DIR/patroni$((i + 1)).pid" \
        "${AS_PG[@]}" patroni "$DIR/node$((i + 1)).yml" >> "$DIR/patroni$((i + 1)).log" 2>&1 < /dev/null) &
    for _ in $(seq 50); do [ -s "$DIR/patroni$((i + 1)).pid" ] && return 0; sleep 0.02; done
}

leader() { # prints the index of the node whose Patroni says it is the primary
    for i in "${!REST_PORTS[@]}"; do
        if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${REST_PORTS[$i]}/primary")" = 200 ]; then
            echo "$i"; return 0
        fi
    done
    return 1
}

patroni_group() { # n: the process group of node n's Patroni (runuser, Patroni, its helpers)
    local f="$DIR/patroni$(($1 + 1)).pid"
    [ -s "$f" ] && cat "$f"
    return 0
}

postgres_group() { # n: the process group of node n's PostgreSQL (Patroni starts the postmaster
    # in a session of its own; its backends share the postmaster's group)
    local f="$DIR/node$(($1 + 1))/postmaster.pid" pm
    [ -s "$f" ] || return 0
    pm=$(head -1 "$f")
    ps -o pgid= -p "$pm" 2>/dev/null | tr -d ' '
    return 0
}

signal_node() { # signal n: Patroni's and PostgreSQL's whole process groups
    local g
    for g in $(patroni_group "$2") $(postgres_group "$2"); do
        [ "$g" -gt 1 ] && kill "-$1" -- "-$g" 2>/dev/null
    done
    return 0
}

wait_writable() { # seconds: until a write through HAProxy commits
    local deadline=$(( $(date +%s) + $1 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        psql_ha "SET statement_timeout = 1000; INSERT INTO drill_heartbeat VALUES (now())" > /dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

up() {
    [ -d "$DIR" ] && { say "$DIR exists: run '$0 down' first"; exit 1; }
    for cmd in patroni etcd haproxy; do
        command -v "$cmd" > /dev/null || { say "needs $cmd (Debian: apt-get install patroni etcd-server haproxy)"; exit 1; }
    done
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    say "etcd on $ETCD"
    etcd --name e1 --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$ETCD" \
        --advertise-client-urls "http://127.0.0.1:$ETCD" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-cluster "e1=http://127.0.0.1:$ETCD_PEER" > "$DIR/etcd.log" 2>&1 &
    echo $! > "$DIR/etcd.pid"
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ETCD/health" > /dev/null && break; sleep 0.2; done

    for i in "${!PG_PORTS[@]}"; do
        node_conf "$i" > "$DIR/node$((i + 1)).yml"
        [ "$(id -u)" = 0 ] && chown postgres "$DIR/node$((i + 1)).yml"
    done
    say "Patroni node1 (bootstraps the cluster; synchronous mode $SYNC)"
    start_node 0
    for _ in $(seq 150); do leader > /dev/null && break; sleep 0.2; done
    leader > /dev/null || { say "FAIL: no leader"; tail -20 "$DIR/patroni1.log"; exit 1; }
    say "Patroni node2 and node3 (replicas)"
    start_node 1
    start_node 2

    cat > "$DIR/haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind 127.0.0.1:$HAPROXY
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
EOF
    for i in "${!PG_PORTS[@]}"; do
        echo "    server node$((i + 1)) 127.0.0.1:${PG_PORTS[$i]} check port ${REST_PORTS[$i]}" >> "$DIR/haproxy.cfg"
    done
    haproxy -f "$DIR/haproxy.cfg" -db > "$DIR/haproxy.log" 2>&1 &
    echo $! > "$DIR/haproxy.pid"

    # HAProxy takes every server for up until its first checks: wait for a write to commit.
    for _ in $(seq 150); do
        psql_ha "CREATE TABLE IF NOT EXISTS drill_heartbeat (at timestamptz)" > /dev/null 2>&1 && break
        sleep 0.2
    done
    wait_writable 30 || { say "FAIL: HAProxy does not reach the leader"; exit 1; }
    if [ "$SYNC" != off ]; then
        for _ in $(seq 150); do
            [ "$(psql_ha "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
            sleep 0.2
        done
    fi
    say "replication: $(psql_ha "SELECT string_agg(application_name || ' ' || sync_state, ', ') FROM pg_stat_replication")"
    say "HAProxy on $HAPROXY -> the leader (node$(( $(leader) + 1 )))"
}

wait_healthy() { # until the leader streams to both replicas (a fault injected before the
    # last one healed would measure Patroni's recovery from two faults at once)
    local seen="" streaming=0
    for i in $(seq 300); do
        seen=$(psql_ha "SELECT string_agg(application_name || ' ' || state, ', ') FROM pg_stat_replication" 2>&1) || true
        streaming=$(grep -c streaming <<< "${seen//, /$'\n'}" || true)
        [ "$streaming" = $(( ${#PG_PORTS[@]} - 1 )) ] && return 0
        [ "$i" -ge 100 ] && [ "$streaming" -ge 1 ] && break
        sleep 0.2
    done
    if [ "$streaming" -ge 1 ]; then
        # A node on a diverged timeline needs `patronictl reinit`; one standby still fails over.
        say "WARNING: not every standby rejoined within 20 s (replication: $seen); going on with one"
        return 0
    fi
    say "FAIL: the cluster did not heal within 60 s (replication: ${seen:-none})"
    return 1
}

kill_leader() {
    local l t0
    wait_healthy
    l=$(leader) || { say "no leader to kill"; exit 1; }
    t0=$(now_ms)
    echo "fault-at-ms $t0"
    signal_node KILL "$l"
    say "SIGKILL node$((l + 1)) (the leader): Patroni and PostgreSQL, every process of both"
    wait_writable 60 || { say "FAIL: no new leader within 60 s"; exit 1; }
    say "node$(( $(leader) + 1 )) promoted by Patroni: writes go through HAProxy again $(( $(now_ms) - t0 )) ms after the kill"
    rm -f "$DIR/patroni$((l + 1)).pid"
    start_node "$l"
    say "node$((l + 1)) restarted: it rejoins as a replica"
}

partition_leader() {
    local l t0 n
    wait_healthy
    l=$(leader) || { say "no leader to cut off"; exit 1; }
    # Whatever happens next (a failure, the harness killing this command), the node is resumed.
    FROZEN=$l
    trap 'signal_node CONT "$FROZEN"' EXIT
    trap 'exit 1' INT TERM HUP
    t0=$(now_ms)
    echo "fault-at-ms $t0"
    signal_node STOP "$l"
    say "froze node$((l + 1)) (the leader): Patroni and PostgreSQL answer nobody, as behind a partition"
    local deadline=$(( $(date +%s) + 60 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        n=$(leader 2>/dev/null || true)
        [ -n "$n" ] && [ "$n" != "$l" ] && break
        sleep 0.2
    done
    if ! wait_writable 60 || [ -z "$n" ] || [ "$n" = "$l" ]; then
        say "FAIL: no other leader within 60 s"
        exit 1
    fi
    say "node$((n + 1)) promoted: writes go through HAProxy again $(( $(now_ms) - t0 )) ms after the cut"
    signal_node CONT "$l"
    sleep 3
    if [ "$(leader 2>/dev/null || true)" = "$l" ]; then
        # Patroni before 3.0.3 (Debian 12 ships 3.0.2) may overwrite the new leader's key with a
        # fresh lease after a pause longer than the TTL (patroni/patroni#2689): for a moment two
        # primaries, and what the promoted node committed in between is rolled back.
        say "WARNING: node$((l + 1)) took the leader key back from node$((n + 1)) after its pause (Patroni $(patroni --version 2>/dev/null | awk '{print $2}'); fixed in 3.0.3): commits made on node$((n + 1)) since its promotion are lost; Palisade's replicas must write back what they signed there"
        # For the fault harness: the database went back in time during this fault.
        echo "history-lost"
    else
        say "node$((l + 1)) back: its Patroni finds it lost the lock and turns it into a replica"
    fi
}

drill() {
    local seconds=${1:-60}
    [ -x "$BENCH" ] || (cd "$ROOT" && cargo build --quiet --bin palisade --bin palisade-bench)
    psql_ha "DROP DATABASE IF EXISTS palisade_drill" > /dev/null
    psql_ha "CREATE DATABASE palisade_drill" > /dev/null
    "$BENCH" faults --seconds "$seconds" --database-url "postgres://postgres@127.0.0.1:$HAPROXY/palisade_drill" \
        --kinds pause --fault "leader killed=$SELF kill-leader" --fault "leader cut off=$SELF partition-leader"
}

status() {
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        if kill -0 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f" .pid): running"; else say "$(basename "$f" .pid): stopped"; fi
    done
    l=$(leader 2>/dev/null) && say "leader: node$((l + 1))"
}

running() { # processes of this deployment still alive (not zombies): pid, state, command
    ps -eo pid=,stat=,args= | awk -v dir="$DIR/" 'index($0, dir) && $2 !~ /^Z/ && !/awk -v dir/'
}

logs() { # the tail of every log of the deployment (for a failed CI run)
    [ -d "$DIR" ] || return 0
    local f
    for f in "$DIR"/etcd.log "$DIR"/haproxy.log "$DIR"/patroni*.log "$DIR"/node*/log/*.log; do
        [ -s "$f" ] || continue
        printf '\n----- %s (last 40 lines) -----\n' "$f"
        tail -n 40 "$f"
    done
}

down() {
    [ -d "$DIR" ] || { say "nothing to stop"; return 0; }
    for i in "${!PG_PORTS[@]}"; do
        signal_node CONT "$i"
        signal_node KILL "$i"
    done
    for f in "$DIR"/etcd.pid "$DIR"/haproxy.pid; do
        [ -s "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    # Anything else still naming the folder (a PostgreSQL Patroni restarted meanwhile), resumed
    # first so that a frozen process does not outlive the kill.
    for _ in $(seq 50); do
        [ -z "$(running)" ] && break
        running | awk '{print $1}' | xargs -r kill -CONT 2>/dev/null
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
    drill) drill "${2:-60}" ;;
    kill-leader) kill_leader ;;
    partition-leader) partition_leader ;;
    status) status ;;
    logs) logs ;;
    down) down ;;
    *) echo "usage: $0 up|drill [SECONDS]|kill-leader|partition-leader|status|logs|down"; exit 2 ;;
esac
