#!/usr/bin/env bash
# Slow clients: does a normal client's page still load in under 1 s while
# slow-client attacks run against `mantissa serve`, and what do they cost
# the server's memory? Figures are in bench/README.md ("Slowloris").
#
#   bench/slowloris.sh                  every phase (about 4 minutes)
#   SLOW_PHASES="2 4" bench/slowloris.sh  only phases 2 and 4
#
# Phase 1, slowhttptest (Debian's), from 127.0.0.1, started again whenever
# it ends (it does not reopen connections) until the phase is up:
#   slowhttptest -H -c 1000 -r 200 -i 10 -x 24 -t GET -p 3 -l LEFT -g -o FILE -u URL
# The other phases use bench/slowloris.py, which can spread its connections
# over many loopback source addresses (slowhttptest cannot):
# Phase 2, slowloris from 16 addresses: 1,000 connections (63 an address,
#   under the server's cap of 64), each sending a request line and then a
#   24-byte header line every 10 s, reopened when the server drops them.
# Phase 3, slowloris beyond the connection cap: 12,000 such connections from
#   200 addresses (60 each), more than the server's 10,000 slots.
# Phase 4, slow bodies: 1,054 POSTs from 17 addresses (62 each), each with a
#   whole head, a CSRF cookie and token (so the server must read the body)
#   and a 1,000-byte body sent a byte every 15 s.
# Phase 5, HTTP/2 streams: 17 prior-knowledge h2c connections from one
#   address, 64 streams each, every stream such a slow POST.
#
# Meanwhile, once a second, a normal client loads the front page from
# another address (curl --interface 127.0.0.2, a fresh connection each time)
# and its time_total is kept; in phase 1 a client on the attacker's own
# address (127.0.0.1) is tried too, to show what the per-address cap does to
# it. The server's own count of open connections comes from /metrics, its
# resident memory from /proc.
#
# Environment: SLOW_SECONDS (30, each phase), SLOW_PHASES ("1 2 3 4 5"),
# MANTISSA_BIN (built in release if unset). Everything listens and connects
# on 127.0.0.0/8 only, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=1000 # phase 1
seconds=${SLOW_SECONDS:-30}
phases=${SLOW_PHASES:-1 2 3 4 5}
runs() { case " $phases " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
case "${1:-}" in
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
"") ;;
*) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

if ! command -v slowhttptest >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing slowhttptest…" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq slowhttptest >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq slowhttptest >/dev/null; }
    else
        echo "slowhttptest is needed: apt-get install slowhttptest (as root)" >&2
        exit 1
    fi
fi
for tool in curl python3 ss; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

if [ -z "${MANTISSA_BIN:-}" ]; then
    echo "building mantissa (release)…" >&2
    cargo build --release -q -p mantissa
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    MANTISSA_BIN="$target_dir/release/mantissa"
fi

# Room for the attack's sockets and the server's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 13000 ]; then
    echo "ulimit -n is $(ulimit -n): too few for phase 3's 12,000 connections" >&2
    exit 1
fi

work=$(mktemp -d)
server=
attack=
cleanup() {
    if [ -n "$attack" ]; then
        pkill -TERM -P "$attack" 2>/dev/null || true # its slowhttptest
        kill "$attack" 2>/dev/null || true
    fi
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$MANTISSA_BIN" init "$work/site" >/dev/null
# The server's count of open connections is read from /metrics, closed by
# default: opened to the measuring address only.
"$MANTISSA_BIN" --site "$work/site" site set metrics-from 127.0.0.3 >/dev/null 2>&1 || true # (builds before 2026-12-07 have it open)
"$MANTISSA_BIN" --site "$work/site" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
server=$!
url=
for _ in $(seq 300); do
    url=$(sed -n 's|^Serving \(http://127\.0\.0\.1:[0-9]*/\)$|\1|p' "$work/serve.out" | head -n 1)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "mantissa serve did not start" >&2; exit 1; }
port=${url##*:}
port=${port%/}
echo "mantissa serve at $url (pid $server, $("$MANTISSA_BIN" --version))"

# One load by a normal client: "HTTP_CODE SECONDS" (000 when refused or
# timed out; at most 5 s).
load() { # ADDRESS
    curl --interface "$1" -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}\n' "$url" || true
}
# The server's own gauge of open connections (from a loopback address that
# is neither the attacker's nor the client's).
open_connections() {
    curl --interface 127.0.0.3 -s --max-time 2 "${url}metrics" |
        awk '/^mantissa_connections_open / { printf "%d", $2; found = 1 } END { if (!found) printf "?" }'
}
# Established TCP connections to the server's port, as the kernel sees them.
established() {
    ss -Htn state established "( dport = :$port )" | wc -l
}

# Median and maximum of a file of "CODE SECONDS" lines, and how many were not 200.
summary() { # FILE
    sort -k2,2n "$1" | awk '
        { t[NR] = $2; if ($1 != "200") bad++ }
        END {
            if (NR == 0) { print "no samples"; exit }
            m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
            printf "%d loads, median %.1f ms, max %.1f ms, %d not 200", NR, m * 1000, t[NR] * 1000, bad + 0
        }'
}

for _ in 1 2 3; do load 127.0.0.2 >/dev/null; done
: >"$work/baseline"
for _ in $(seq 10); do load 127.0.0.2 >>"$work/baseline"; done
echo "before the attack (127.0.0.2): $(summary "$work/baseline")"

# Samples once a second while process $1 runs (at most $seconds + 20 s):
# writes $2.client (127.0.0.2), $2.same (127.0.0.1, phase 1 only), $2.open
# and $2.rss.
measure() { # PID PREFIX
    : >"$2.client"; : >"$2.same"; : >"$2.open"; : >"$2.rss"
    local end=$((SECONDS + seconds + 20))
    while kill -0 "$1" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
        local t0=$SECONDS
        load 127.0.0.2 >>"$2.client"
        [ "$2" != "$work/p1" ] || load 127.0.0.1 >>"$2.same"
        echo "$(open_connections) $(established)" >>"$2.open"
        awk '/^VmRSS/ { print $2 }' "/proc/$server/status" >>"$2.rss"
        [ "$SECONDS" -gt "$t0" ] || sleep 1
    done
}
report() { # PREFIX
    echo "  normal client (127.0.0.2): $(summary "$1.client")"
    if [ -s "$1.same" ]; then
        echo "  client on the attacker's address (127.0.0.1): $(summary "$1.same"); codes: $(
            awk '{ n[$1]++ } END { for (c in n) printf "%s×%d ", c, n[c] }' "$1.same")"
    fi
    echo "  open connections, server's gauge: max $(sort -n "$1.open" | awk '$1 != "?" { m = $1 } END { print m + 0 }')," \
        "established TCP to the port: max $(awk '{ print $2 }' "$1.open" | sort -n | tail -n 1)"
    echo "  server memory (RSS): before the attacks $((rss_before / 1024)) MiB," \
        "max $(sort -n "$1.rss" | tail -n 1 | awk '{ printf "%d", $1 / 1024 }') MiB," \
        "after $(awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$server/status") MiB"
    awk -v goal=1 '
        { if ($2 > max) max = $2; if ($1 != "200") bad++ }
        END {
            if (NR > 0 && max < goal && !bad) printf "  goal (every load under 1 s): met (%d loads)\n", NR
            else printf "  goal (every load under 1 s): NOT met (max %.1f ms, %d of %d not 200)\n", max * 1000, bad, NR
        }' "$1.client"
}
rss_before=$(awk '/^VmRSS/ { print $2 }' "/proc/$server/status")

if runs 1; then
    echo
    echo "== phase 1: slowhttptest -H -c $connections -r 200 -i 10 -x 24 -t GET -p 3, from 127.0.0.1, for $seconds s"
    # slowhttptest opens its connections once and ends when none is left
    # open (the server's 10 s header timeout closes them), so it is started
    # again until the phase's time is up; each run is bounded by the time
    # left (-l).
    (
        end=$((SECONDS + seconds))
        round=0
        while [ "$SECONDS" -lt "$end" ]; do
            round=$((round + 1))
            slowhttptest -H -c "$connections" -r 200 -i 10 -x 24 -t GET -p 3 -l $((end - SECONDS)) \
                -g -o "$work/slowhttptest.$round" -u "$url" >"$work/slowhttptest.$round.log" 2>&1 || true
            sleep 0.2
        done
    ) &
    attack=$!
    measure "$attack" "$work/p1"
    wait "$attack" || true
    attack=
    report "$work/p1"
    echo "  slowhttptest, each run (from its CSV and log; its probe connects from 127.0.0.1):"
    for log in $(ls "$work"/slowhttptest.*.log | sort -t. -k2,2n); do
        run=${log%.log}
        python3 - "$run.csv" "$log" <<'PY' || echo "    (no statistics in $run.csv)"
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", open(sys.argv[2], errors="replace").read().replace("\r", "\n"))
ended = re.findall(r"Test ended on (\d+)\w* second", text)
status = re.findall(r"Exit status: (.*)", text)
col = lambda name: [int(float(r[name])) for r in rows]
connected, closed, available = col("Connected"), col("Closed"), col("Service Available")
print(f"    run {sys.argv[1].split('.')[-2]}: {ended[-1] if ended else '?'} s, connected max {max(connected)}"
      f" (median {sorted(connected)[len(connected) // 2]}), closed {closed[-1]},"
      f" service available {sum(1 for a in available if a > 0)} of {len(available)} s;"
      f" exit status: {status[-1].strip() if status else '?'}")
PY
    done
    last=$(ls "$work"/slowhttptest.*.log | sort -t. -k2,2n | tail -n 1)
    echo "  the last run's closing report:"
    tr '\r' '\n' <"$last" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' |
        awk '/slow HTTP test status on/ { block = "" } { block = block $0 "\n" } END { printf "%s", block }' |
        grep -v '^[[:space:]]*$' | sed 's/^/    /'
fi

# One phase of bench/slowloris.py: PHASE MODE CONNECTIONS ADDRESSES TITLE
spread_attack() {
    echo
    echo "== phase $1: $5, $seconds s"
    python3 bench/slowloris.py "$2" "$port" "$3" "$4" "$seconds" >"$work/attack.$1.log" 2>&1 &
    attack=$!
    measure "$attack" "$work/p$1"
    wait "$attack" || true
    attack=
    report "$work/p$1"
    awk '/ s: open / { split($4, a, ","); if (a[1] + 0 > max) max = a[1] + 0 }
        END { printf "  the attack held at most %d connections at once\n", max }' "$work/attack.$1.log"
    tail -n 1 "$work/attack.$1.log" | sed 's/^/  attack, /'
}
! runs 2 || spread_attack 2 head 1000 16 "slowloris, 1,000 connections from 16 addresses (a header line every 10 s)"
! runs 3 || spread_attack 3 head 12000 200 "slowloris beyond the connection cap: 12,000 connections from 200 addresses"
! runs 4 || spread_attack 4 body 1054 17 "slow bodies: 1,054 POSTs from 17 addresses (a byte every 15 s)"
! runs 5 || spread_attack 5 h2 17 1 "HTTP/2: 17 h2c connections × 64 streams with slow bodies, from one address"

echo
kill -TERM "$server"
if wait "$server"; then
    echo "mantissa serve stopped on SIGTERM (exit 0)"
else
    echo "mantissa serve exited with $? on SIGTERM"
fi
server=
echo "server log: $(grep -ci 'warn\|error' "$work/serve.err" || true) warning or error lines"
