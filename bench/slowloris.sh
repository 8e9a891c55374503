#!/usr/bin/env bash
# Slowloris: does a normal client's page still load in under 1 s while 1,000
# slowloris connections are kept open against `mantissa serve`? Figures are in
# bench/README.md ("Slowloris").
#
#   bench/slowloris.sh                 both phases (about 90 s)
#   SLOW_SPREAD=0 bench/slowloris.sh   phase 1 only
#
# Phase 1, slowhttptest (Debian's), from 127.0.0.1, started again whenever
# it ends (it does not reopen connections) until 30 s are up:
#   slowhttptest -H -c 1000 -r 200 -i 10 -x 24 -t GET -p 3 -l LEFT -g -o FILE -u URL
# Phase 2, the same attack spread over 16 loopback addresses (127.0.1.1-16,
# 63 connections each, under the server's per-address cap of 64; more
# addresses for more connections), so that 1,000 of them can really be open
# at once: slowhttptest cannot choose its source address. A small Python client does it: each connection sends
# "GET / HTTP/1.1" and then one 24-byte header line every 10 s, and is
# reopened when the server drops it.
#
# Meanwhile, once a second, a normal client loads the front page from
# another address (curl --interface 127.0.0.2, a fresh connection each time)
# and its time_total is kept; a client on the attacker's own address
# (127.0.0.1) is tried too, to show what the per-address cap does to it.
# The server's own count of open connections comes from /metrics.
#
# Environment: SLOW_CONNECTIONS (1000), SLOW_SECONDS (30, each phase),
# SLOW_SPREAD (1: run phase 2), MANTISSA_BIN (built in release if unset).
# Everything listens and connects on 127.0.0.0/8 only, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${SLOW_CONNECTIONS:-1000}
seconds=${SLOW_SECONDS:-30}
spread=${SLOW_SPREAD:-1}
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
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((connections + 200)) ]; then
    echo "ulimit -n is $(ulimit -n): too few for $connections connections" >&2
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
# writes $2.client (127.0.0.2), $2.same (127.0.0.1) and $2.open.
measure() { # PID PREFIX
    : >"$2.client"; : >"$2.same"; : >"$2.open"
    local end=$((SECONDS + seconds + 20))
    while kill -0 "$1" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
        local t0=$SECONDS
        load 127.0.0.2 >>"$2.client"
        load 127.0.0.1 >>"$2.same"
        echo "$(open_connections) $(established)" >>"$2.open"
        [ "$SECONDS" -gt "$t0" ] || sleep 1
    done
}
report() { # PREFIX
    echo "  normal client (127.0.0.2): $(summary "$1.client")"
    echo "  client on the attacker's address (127.0.0.1): $(summary "$1.same"); codes: $(
        awk '{ n[$1]++ } END { for (c in n) printf "%s×%d ", c, n[c] }' "$1.same")"
    echo "  open connections, server's gauge: max $(sort -n "$1.open" | awk '$1 != "?" { m = $1 } END { print m + 0 }')," \
        "established TCP to the port: max $(awk '{ print $2 }' "$1.open" | sort -n | tail -n 1)"
    awk -v goal=1 '
        { if ($2 > max) max = $2; if ($1 != "200") bad++ }
        END {
            if (NR > 0 && max < goal && !bad) print "  goal (every load under 1 s): met"
            else printf "  goal (every load under 1 s): NOT met (max %.1f ms, %d not 200)\n", max * 1000, bad
        }' "$1.client"
}

echo
echo "== phase 1: slowhttptest -H -c $connections -r 200 -i 10 -x 24 -t GET -p 3, from 127.0.0.1, for $seconds s"
# slowhttptest opens its connections once and ends when none is left open
# (the server's 10 s header timeout closes them), so it is started again
# until the phase's time is up; each run is bounded by the time left (-l).
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
    python3 - "$run.csv" "$log" <<'EOF' || echo "    (no statistics in $run.csv)"
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
EOF
done
last=$(ls "$work"/slowhttptest.*.log | sort -t. -k2,2n | tail -n 1)
echo "  the last run's closing report:"
tr '\r' '\n' <"$last" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' |
    awk '/slow HTTP test status on/ { block = "" } { block = block $0 "\n" } END { printf "%s", block }' |
    grep -v '^[[:space:]]*$' | sed 's/^/    /'

if [ "$spread" = 1 ]; then
    echo
    addresses=$(((connections + 62) / 63))
    echo "== phase 2: $connections slowloris connections from $addresses loopback addresses (127.0.1.1…), 200/s, a header line every 10 s, $seconds s"
    python3 - "$port" "$connections" "$seconds" >"$work/spread.log" 2>&1 <<'EOF' &
# A bounded slowloris from several loopback source addresses: keeps up to N
# connections open, each sending a request line and then one header line
# every 10 s; a connection the server closes is reopened (at most 200 new
# connections a second). Stops after SECONDS. Prints per-second counts.
import asyncio, random, string, sys, time

port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
# 63 connections an address, under the server's per-address cap of 64
addrs = [f"127.0.{1 + i // 254}.{1 + i % 254}" for i in range(max(1, -(-n // 63)))]
stop = time.monotonic() + seconds
stats = {"open": 0, "opened": 0, "closed": 0, "refused": 0}

async def one(i):
    src = addrs[i % len(addrs)]
    while time.monotonic() < stop:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 5)
        except (OSError, asyncio.TimeoutError):
            stats["refused"] += 1
            await asyncio.sleep(1)
            continue
        stats["open"] += 1; stats["opened"] += 1
        try:
            w.write(f"GET /?{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n".encode())
            await w.drain()
            while time.monotonic() < stop:
                # read() returns when the server answers (408, 503…) or
                # closes: then this connection is done and a new one opens.
                try:
                    await asyncio.wait_for(r.read(4096), 10)
                    break
                except asyncio.TimeoutError:
                    pass
                k = "".join(random.choices(string.ascii_letters, k=10))
                w.write(f"X-{k}: {k}{k[:9]}\r\n".encode())  # 24 bytes
                await w.drain()
        except OSError:
            pass
        finally:
            stats["open"] -= 1; stats["closed"] += 1
            w.close()

async def main():
    tasks = []
    async def report():
        t0 = time.monotonic()
        while time.monotonic() < stop + 1:
            await asyncio.sleep(1)
            print(f"{time.monotonic() - t0:.0f} s: open {stats['open']}, opened {stats['opened']},"
                  f" closed {stats['closed']}, failed {stats['refused']}", flush=True)
    rep = asyncio.create_task(report())
    for i in range(n):  # 200 new connections a second
        tasks.append(asyncio.create_task(one(i)))
        if i % 200 == 199:
            await asyncio.sleep(1)
    await asyncio.gather(*tasks)
    rep.cancel()
    print(f"end: opened {stats['opened']}, closed {stats['closed']}, failed {stats['refused']}", flush=True)

asyncio.run(main())
EOF
    attack=$!
    measure "$attack" "$work/p2"
    wait "$attack" || true
    attack=
    report "$work/p2"
    echo "  the attacking client's counts (open = connections it held at that second):"
    awk '/ s: open / { split($4, a, ","); if (a[1] + 0 > max) max = a[1] + 0 } END { printf "    held at most %d at once\n", max }' "$work/spread.log"
    tail -n 1 "$work/spread.log" | sed 's/^/    /'
fi

echo
kill -TERM "$server"
if wait "$server"; then
    echo "mantissa serve stopped on SIGTERM (exit 0)"
else
    echo "mantissa serve exited with $? on SIGTERM"
fi
server=
echo "server log: $(grep -ci 'warn\|error' "$work/serve.err" || true) warning or error lines"
