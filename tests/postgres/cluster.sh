#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, in a temporary folder.
#
#   tests/postgres/cluster.sh start DIR   makes and starts one, on a free
#                                         port of 127.0.0.1, and prints its
#                                         URL (postgres://…/postgres)
#   tests/postgres/cluster.sh start DIR PID
#                                         the same, stopped and removed once
#                                         process PID has ended (for a test
#                                         binary that starts its own)
#   tests/postgres/cluster.sh stop DIR    stops it and removes its files
#
# DIR keeps where the cluster is (the cluster itself is in a folder of its
# own under /tmp, which the `postgres` user can reach).
#
# Installs Debian's postgresql when no server is found. initdb refuses to
# run as root, so as root the cluster is made and run by the `postgres`
# user the package creates. Only loopback connections, trusted: nothing
# outside this machine reaches it, and it lives as long as the test run.
set -euo pipefail

bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    dir=${2:?usage: cluster.sh start DIR}
    if ! bin=$(bindir); then
        echo "installing postgresql (apt-get)..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        bin=$(bindir)
    fi
    mkdir -p "$dir"
    home=$(mktemp -d /tmp/mantissa-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$home"
    echo "$home" >"$dir/where"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$home/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_owner "$bin/pg_ctl" -D "$home/data" -l "$home/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $home -c max_connections=200" \
        start >/dev/null
    if [ -n "${3:-}" ]; then
        owner=$3
        script=$(readlink -f "$0")
        # Detached, and with no handle on the caller's output, which would
        # otherwise stay open until the cluster stops.
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"' \
            _ "$owner" "$script" "$dir" </dev/null >/dev/null 2>&1 &
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: cluster.sh stop DIR}
    home=$(cat "$dir/where" 2>/dev/null) || exit 0
    bin=$(bindir)
    [ -d "$home/data" ] && as_owner "$bin/pg_ctl" -D "$home/data" -m fast -w stop >/dev/null || true
    rm -rf "$home" "$dir/where"
    rmdir "$dir" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
    ;;
esac
