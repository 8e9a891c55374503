#!/usr/bin/env bash
# Two builds of mantissa-fortunes side by side: each round loads one, then
# the other (every other round in the other order), with the same wrk, so
# that a change's effect is measured in one run, in one machine state.
#
#   bench/ab-fortunes.sh A_BIN B_BIN     four rounds, Fortunes and plaintext
#
# Build the "before" binary from another checkout with its own target
# folder, for instance:
#   git worktree add /tmp/before REV
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#       cargo build --release -p mantissa-bench-web --bin mantissa-fortunes)
#   cargo build --release -p mantissa-bench-web --bin mantissa-fortunes
#   bench/ab-fortunes.sh /tmp/before-target/release/mantissa-fortunes \
#       target/release/mantissa-fortunes
#
# Environment: AB_ROUNDS (4), AB_DURATION (8s), AB_PORT (18091: A there,
# B on the next). Prints one line a run and the medians. 127.0.0.1 only.
set -euo pipefail

if [ $# -ne 2 ]; then
    sed -n '2,19p' "$0"
    exit 2
fi
a_bin=$1
b_bin=$2
rounds=${AB_ROUNDS:-4}
duration=${AB_DURATION:-8s}
port=${AB_PORT:-18091}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

"$a_bin" "127.0.0.1:$port" >/dev/null 2>&1 &
a_pid=$!
"$b_bin" "127.0.0.1:$((port + 1))" >/dev/null 2>&1 &
b_pid=$!
trap 'kill $a_pid $b_pid 2>/dev/null' EXIT
sleep 2

results=$(mktemp)
for path in fortunes plaintext; do
    for p in "$port" "$((port + 1))"; do
        wrk -t2 -c64 -d2s "http://127.0.0.1:$p/$path" >/dev/null
    done
done
for round in $(seq 1 "$rounds"); do
    for path in fortunes plaintext; do
        if [ $((round % 2)) = 1 ]; then order="A B"; else order="B A"; fi
        for side in $order; do
            p=$port
            [ "$side" = B ] && p=$((port + 1))
            rps=$(wrk -t2 -c64 -d"$duration" "http://127.0.0.1:$p/$path" | awk '/Requests\/sec/ {print $2}')
            echo "round $round $path $side $rps" | tee -a "$results"
        done
    done
done
python3 - "$results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, _, path, side, rps = line.split()
    runs.setdefault((path, side), []).append(float(rps))
for path in ("fortunes", "plaintext"):
    a, b = statistics.median(runs[(path, "A")]), statistics.median(runs[(path, "B")])
    print(f"{path}: A {a:,.0f} req/s, B {b:,.0f} req/s (medians), B/A = {b / a:.2f}")
EOF
rm -f "$results"
