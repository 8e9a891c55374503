#!/usr/bin/env bash
# Web benchmarks: TechEmpower Fortunes and plaintext on Mantissa's full
# stack beside minimal references, and the `mantissa` binary's idle memory
# and start-up time. Figures and goals are in bench/README.md ("Web").
#
#   bench/web.sh                 everything (about 3 minutes)
#   bench/web.sh --analysis      also the variants that show where time goes
#   WEB_ROUNDS=1 bench/web.sh    one round instead of three
#   bench/web.sh --postgres      Fortunes on PostgreSQL instead: Mantissa with
#                                its stores in PostgreSQL (a node, as
#                                `mantissa --store … serve` runs) against axum +
#                                deadpool-postgres + tokio-postgres, and against
#                                Mantissa on SQLite, on a throwaway cluster
#                                (tests/postgres/cluster.sh) on this machine
#   bench/web.sh --postgres --nodes
#                                CPU per request of one node against three on
#                                the same database, the load spread over them
#
# Environment: WEB_ROUNDS (3), WEB_DURATION (8s, each wrk run; at most 10s),
# WEB_WARMUP (2s), WEB_CONNECTIONS (64), WEB_THREADS (2), WEB_PORT (18081:
# first of the ports used on 127.0.0.1), WEB_QUIET (10: wait, up to two
# minutes, until other processes use less than this % of the CPUs before a
# run), WEB_NOISY (25: a run during which other processes used this % of
# one CPU or more is done again, twice at most, and flagged if still
# noisy), MANTISSA_BIN (the mantissa binary to time; built if unset).
#
# Every server listens on 127.0.0.1 only. Each measured run is
#   wrk -t2 -c64 -d8s http://127.0.0.1:PORT/PATH
# after a warm-up run; targets are interleaved round by round (every other
# round in reverse order), and the figure kept is the median over rounds.
set -euo pipefail

cd "$(dirname "$0")/.."

analysis=0
postgres=0
nodes=0
for arg in "$@"; do
    case "$arg" in
    --analysis) analysis=1 ;;
    --postgres) postgres=1 ;;
    --nodes) nodes=1 ;;
    -h | --help)
        sed -n '2,23p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing wrk…" >&2
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        echo "wrk is needed: apt-get install wrk (as root)" >&2
        exit 1
    fi
fi
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

echo "building (release)…" >&2
cargo build --release -q -p mantissa-bench-web
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release"
if [ -z "${MANTISSA_BIN:-}" ]; then
    if cargo build --release -q -p mantissa; then
        MANTISSA_BIN="$bin/mantissa"
    else
        echo "the mantissa binary does not build: memory and start-up are skipped" >&2
        MANTISSA_BIN=""
    fi
fi

PG_MANTISSA="" PG_REFERENCE=""
if [ "$postgres" = 1 ]; then
    # The cluster stops when this process (python3, below, by exec) ends.
    pgdir=$(mktemp -d)
    server=$(tests/postgres/cluster.sh start "$pgdir/db" $$)
    psql -q "$server" -c "CREATE ROLE bench LOGIN" \
        -c "CREATE DATABASE bench_mantissa OWNER bench" \
        -c "CREATE DATABASE bench_reference OWNER bench"
    base=${server%/*}
    base=${base/postgres:\/\/postgres@/postgres:\/\/bench@}
    PG_MANTISSA="$base/bench_mantissa" PG_REFERENCE="$base/bench_reference"
    PG_DATA="$(cat "$pgdir/db/where")/data"
    export PG_DATA
    echo "PostgreSQL: $server (Mantissa's database and the reference's, role bench)" >&2
fi
if [ "$nodes" = 1 ] && [ "$postgres" = 0 ]; then
    echo "--nodes goes with --postgres" >&2
    exit 2
fi
export BIN_DIR="$bin" MANTISSA_BIN ANALYSIS="$analysis" PG_MANTISSA PG_REFERENCE NODES="$nodes"
exec python3 - <<'EOF'
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ["BIN_DIR"]
MANTISSA = os.environ.get("MANTISSA_BIN", "")
ANALYSIS = os.environ.get("ANALYSIS") == "1"
ROUNDS = int(os.environ.get("WEB_ROUNDS", "3"))
DURATION = os.environ.get("WEB_DURATION", "8s")
WARMUP = os.environ.get("WEB_WARMUP", "2s")
CONNS = int(os.environ.get("WEB_CONNECTIONS", "64"))
THREADS = int(os.environ.get("WEB_THREADS", "2"))
PORT = int(os.environ.get("WEB_PORT", "18081"))
QUIET = float(os.environ.get("WEB_QUIET", "10"))
NOISY = float(os.environ.get("WEB_NOISY", "25"))
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

if not re.fullmatch(r"([1-9]|10)s", DURATION):
    sys.exit(f"WEB_DURATION must be 1s to 10s, not {DURATION}")

started = []  # the processes this script started, stopped at the end
LOGS = tempfile.mkdtemp(prefix="mantissa-web-bench-")


def show_logs():
    """The servers' logs, when they said anything."""
    for name in sorted(os.listdir(LOGS)):
        path = os.path.join(LOGS, name)
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        if lines:
            print(f"{name} logged {len(lines)} line(s) ({path}), the first:")
            for line in lines[:5]:
                print("   ", line[:300])


def stop_all():
    show_logs()
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_answer(url, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"{url} did not answer within {timeout}s")


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers.get("content-type", ""), r.read().decode()


def cpu_busy():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB
    return float("nan")


def wait_quiet():
    """Waits (up to two minutes) until other processes leave the CPUs
    alone; returns the busy % seen last."""
    end = time.monotonic() + 120
    while True:
        b0, t0 = cpu_busy()
        time.sleep(1)
        b1, t1 = cpu_busy()
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy < QUIET or time.monotonic() > end:
            return busy
        time.sleep(2)


def wrk(url, duration):
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{duration}", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    return rps, int(bad.group(1)) if bad else 0, errs.group(0) if errs else "", lat.group(1) if lat else "?"


def cross_cpu():
    """The machine's cross-CPU latency just now (`cross-cpu`, in ns)."""
    out = subprocess.run([os.path.join(BIN, "cross-cpu"), "200000"],
                         check=True, capture_output=True, text=True).stdout
    return int(re.search(r"(\d+) ns", out).group(1))


def measure(server_pid, url):
    """One warm-up and one measured wrk run; the CPU the server and
    everything else used during the measured run."""
    quiet_before = wait_quiet()
    xcpu = cross_cpu()
    wrk(url, WARMUP)
    b0, t0 = cpu_busy()
    s0 = proc_cpu(server_pid)
    c0 = os.times()
    rps, bad, errs, lat = wrk(url, DURATION)
    c1 = os.times()
    b1, t1 = cpu_busy()
    s1 = proc_cpu(server_pid)
    total = max(1, t1 - t0)
    server = 100.0 * NCPU * (s1 - s0) / total
    client = 100.0 * NCPU * ((c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)) * HZ / total
    busy = 100.0 * NCPU * (b1 - b0) / total
    other = max(0.0, busy - server - client)
    return dict(rps=rps, bad=bad, errs=errs, lat=lat, server=server, client=client,
                other=other, quiet=quiet_before, xcpu=xcpu)


def start(name, args, path):
    global PORT
    while not port_free(PORT):
        PORT += 1
    port = PORT
    PORT += 1
    # What a server logs (warnings and errors: a 500's cause, above all)
    # is kept, and shown at the end.
    log = open(os.path.join(LOGS, f"{name}-{port}.log"), "w")
    p = subprocess.Popen([os.path.join(BIN, name), f"127.0.0.1:{port}", *args],
                         stdout=subprocess.DEVNULL, stderr=log)
    started.append(p)
    wait_answer(f"http://127.0.0.1:{port}{path}", p)
    return p, port


def rows(html):
    import html as h
    return [(int(i), h.unescape(m)) for i, m in
            re.findall(r"<tr><td>(-?\d+)</td><td>(.*?)</td></tr>", html)]


def check_fortunes(mantissa_port, reference_port):
    status, ctype, page = fetch(f"http://127.0.0.1:{mantissa_port}/fortunes")
    _, _, ref = fetch(f"http://127.0.0.1:{reference_port}/fortunes")
    problems = []
    if status != 200 or not ctype.startswith("text/html"):
        problems.append(f"status {status}, content-type {ctype}")
    r = rows(page)
    if len(r) != 13:
        problems.append(f"{len(r)} rows, not 13")
    if [m for _, m in r] != sorted(m for _, m in r):
        problems.append("rows not sorted by message")
    if (0, "Additional fortune added at request time.") not in r:
        problems.append("the extra row (id 0) is missing")
    if "<script>" in page or "&lt;script&gt;" not in page:
        problems.append("the <script> row is not escaped")
    if "フレームワークのベンチマーク" not in page:
        problems.append("the Japanese row is missing or mangled")
    if " ".join(page.split()) != " ".join(ref.split()):
        problems.append("Mantissa's page differs from the reference's")
    if problems:
        sys.exit("Fortunes output is wrong: " + "; ".join(problems))
    _, _, hello = fetch(f"http://127.0.0.1:{mantissa_port}/plaintext")
    if hello != "Hello, World!":
        sys.exit(f"/plaintext answered {hello!r}")
    print("check: /fortunes has 13 rows, sorted, script escaped, same HTML as the reference; /plaintext ok")


PG_MANTISSA = os.environ.get("PG_MANTISSA", "")
PG_REFERENCE = os.environ.get("PG_REFERENCE", "")


def run_rounds(targets, noisy=None):
    """Each target measured once a round, every other round backwards;
    returns every round's measurement per (test, name). A run during which
    other processes used `noisy` % of a CPU or more is done again."""
    noisy = NOISY if noisy is None else noisy
    results = {(t, n): [] for t, n, _, _ in targets}
    for rnd in range(1, ROUNDS + 1):
        for test, name, proc, url in (targets if rnd % 2 else targets[::-1]):
            for attempt in range(3):  # again if other processes took the CPUs
                m = measure(proc.pid, url)
                if m["other"] < noisy:
                    break
            results[(test, name)].append(m)
            flag = "  (noisy)" if m["other"] >= noisy else ""
            if m["bad"] or m["errs"]:
                flag = f"  !! {m['bad']} non-2xx {m['errs']}"
            print(f"  round {rnd}  {test:9} {name:30} {m['rps']:>10,.0f} req/s  latency avg {m['lat']:>8}"
                  f"  cpu: server {m['server']:4.0f}%  wrk {m['client']:4.0f}%  other {m['other']:3.0f}%"
                  f"  cross-CPU {m['xcpu']:3} ns{flag}",
                  flush=True)
    return results


def postgres_fortunes():
    """Fortunes with the stores in PostgreSQL, against axum +
    tokio-postgres on the same server, and against Mantissa on SQLite.
    The server runs on this machine's CPUs too: its CPU is counted as
    "other" in each line, and the same for every target."""
    mp, mp_port = start("mantissa-fortunes", ["--store", PG_MANTISSA], "/plaintext")
    rp, rp_port = start("reference-pg-fortunes", ["--db", PG_REFERENCE], "/plaintext")
    ms, ms_port = start("mantissa-fortunes", [], "/plaintext")
    check_fortunes(mp_port, rp_port)
    targets = [
        ("fortunes", "mantissa on PostgreSQL", mp, f"http://127.0.0.1:{mp_port}/fortunes"),
        ("fortunes", "axum + tokio-postgres", rp, f"http://127.0.0.1:{rp_port}/fortunes"),
        ("fortunes", "mantissa on SQLite", ms, f"http://127.0.0.1:{ms_port}/fortunes"),
    ]
    # The server's CPU is "other" here, for both sides: no run is noisy
    # for it alone.
    results = run_rounds(targets, noisy=101)
    med = {k: statistics.median(x["rps"] for x in v) for k, v in results.items()}
    print()
    for test, name, _, _ in targets:
        per = ", ".join(f"{x['rps']:,.0f}" for x in results[(test, name)])
        print(f"{test:10} {name:30} {med[(test, name)]:>15,.0f}  {per}")
    print()
    for a, b, goal in [("mantissa on PostgreSQL", "axum + tokio-postgres", 0.7),
                       ("mantissa on PostgreSQL", "mantissa on SQLite", None)]:
        r = med[("fortunes", a)] / med[("fortunes", b)]
        per = [x["rps"] / y["rps"] for x, y in zip(results[("fortunes", a)], results[("fortunes", b)])]
        verdict = "" if goal is None else (f"goal >= {goal}: " + ("met" if r >= goal else "MISSED") + "; ")
        print(f"fortunes: {a} / {b} = {r:.2f}  ({verdict}per round " + ", ".join(f"{p:.2f}" for p in per) + ")")
    stop_all()


def wrk_spread(urls, duration):
    """wrk on every one of `urls` at once, the threads and connections
    shared out between them; total req/s, non-2xx and socket errors."""
    n = len(urls)
    procs = [subprocess.Popen(
        ["wrk", f"-t{max(1, THREADS // n)}", f"-c{max(1, CONNS // n)}", f"-d{duration}", u],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for u in urls]
    rps = bad = 0
    errs = []
    for p in procs:
        out = p.communicate()[0]
        rps += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        b = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        bad += int(b.group(1)) if b else 0
        e = re.search(r"Socket errors:.*", out)
        if e:
            errs.append(e.group(0))
    return rps, bad, "; ".join(errs)


def postgres_cpu():
    """CPU time (jiffies) of the benchmark's PostgreSQL server so far: its
    postmaster and the processes it started that are still running (the
    connections of the nodes' pools last the whole run)."""
    with open(os.path.join(os.environ["PG_DATA"], "postmaster.pid")) as f:
        postmaster = int(f.readline())
    total = proc_cpu(postmaster)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total


def nodes_cpu():
    """Fortunes on PostgreSQL through one node, then through three nodes
    of the same site (the load spread over them), in alternating rounds:
    requests per second, and the CPU time each request costs in the nodes
    and in the PostgreSQL server (each process's own, so that other work
    on the machine is not counted)."""
    seconds = int(DURATION.rstrip("s"))
    one = [start("mantissa-fortunes", ["--store", PG_MANTISSA], "/plaintext")]
    three = [start("mantissa-fortunes", ["--store", PG_MANTISSA], "/plaintext") for _ in range(3)]
    setups = [("1 node", one), ("3 nodes", three)]
    results = {name: [] for name, _ in setups}
    for rnd in range(1, ROUNDS + 1):
        for name, nodes in (setups if rnd % 2 else setups[::-1]):
            urls = [f"http://127.0.0.1:{port}/fortunes" for _, port in nodes]
            wait_quiet()
            wrk_spread(urls, WARMUP)
            p0 = postgres_cpu()
            n0 = sum(proc_cpu(p.pid) for p, _ in nodes)
            rps, bad, errs = wrk_spread(urls, DURATION)
            p1 = postgres_cpu()
            n1 = sum(proc_cpu(p.pid) for p, _ in nodes)
            requests = rps * seconds
            node_us = 1e6 * (n1 - n0) / HZ / requests
            rest_us = 1e6 * (p1 - p0) / HZ / requests
            m = dict(rps=rps, node=node_us, rest=rest_us)
            results[name].append(m)
            flag = f"  !! {bad} non-2xx {errs}" if bad or errs else ""
            print(f"  round {rnd}  {name:8} {rps:>10,.0f} req/s  CPU per request: nodes {node_us:6.1f} µs"
                  f"  PostgreSQL {rest_us:6.1f} µs  total {node_us + rest_us:6.1f} µs{flag}",
                  flush=True)
    print()
    med = {}
    for name, _ in setups:
        med[name] = {k: statistics.median(x[k] for x in results[name]) for k in ("rps", "node", "rest")}
        m = med[name]
        print(f"nodes: {name:8} {m['rps']:>10,.0f} req/s  CPU per request {m['node']:.1f} µs in the nodes"
              f" + {m['rest']:.1f} µs in PostgreSQL = {m['node'] + m['rest']:.1f} µs")
    a, b = med["3 nodes"], med["1 node"]
    print(f"nodes: 3 nodes / 1 node: throughput {a['rps'] / b['rps']:.2f}, "
          f"CPU per request {(a['node'] + a['rest']) / (b['node'] + b['rest']):.2f}")
    stop_all()


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    kernel = os.uname().release
    return f"{NCPU} CPUs ({model}), {mem:.1f} GiB RAM, Linux {kernel}"


try:
    print("machine:", machine())
    print(f"load: wrk -t{THREADS} -c{CONNS} -d{DURATION} (after a {WARMUP} warm-up), "
          f"{ROUNDS} round(s), median kept")

    if PG_MANTISSA and os.environ.get("NODES") == "1":
        nodes_cpu()
        sys.exit(0)
    if PG_MANTISSA:
        postgres_fortunes()
        sys.exit(0)

    mf, mf_port = start("mantissa-fortunes", [], "/plaintext")
    rf, rf_port = start("reference-fortunes", [], "/plaintext")
    bh, bh_port = start("bare-hyper", [], "/")
    check_fortunes(mf_port, rf_port)

    targets = [
        ("fortunes", "mantissa", mf, f"http://127.0.0.1:{mf_port}/fortunes"),
        ("fortunes", "reference", rf, f"http://127.0.0.1:{rf_port}/fortunes"),
        ("plaintext", "mantissa", mf, f"http://127.0.0.1:{mf_port}/plaintext"),
        ("plaintext", "bare-hyper", bh, f"http://127.0.0.1:{bh_port}/"),
    ]
    if ANALYSIS:
        rw, rw_port = start("reference-fortunes", ["--query", "worker"], "/plaintext")
        mw, mw_port = start("mantissa-fortunes", ["--read", "worker"], "/plaintext")
        mh, mh_port = start("mantissa-fortunes", ["--variant", "handlers"], "/plaintext")
        mhw, mhw_port = start("mantissa-fortunes", ["--variant", "handlers", "--read", "worker"], "/plaintext")
        mh4, mh4_port = start("mantissa-fortunes", ["--variant", "handlers", "--read", "async-4"], "/plaintext")
        ma, ma_port = start("mantissa-fortunes", ["--variant", "handlers-axum"], "/plaintext")
        targets += [
            ("fortunes", "reference, query on worker", rw, f"http://127.0.0.1:{rw_port}/fortunes"),
            ("fortunes", "mantissa, store read on worker", mw, f"http://127.0.0.1:{mw_port}/fortunes"),
            ("fortunes", "mantissa handlers, no layers", mh, f"http://127.0.0.1:{mh_port}/fortunes"),
            ("fortunes", "same, store read on worker", mhw, f"http://127.0.0.1:{mhw_port}/fortunes"),
            ("fortunes", "same, at most 4 reads at once", mh4, f"http://127.0.0.1:{mh4_port}/fortunes"),
            ("fortunes", "same, axum::serve", ma, f"http://127.0.0.1:{ma_port}/fortunes"),
            ("plaintext", "reference (axum)", rw, f"http://127.0.0.1:{rw_port}/plaintext"),
            ("plaintext", "mantissa handlers, no layers", mh, f"http://127.0.0.1:{mh_port}/plaintext"),
            ("plaintext", "same, axum::serve", ma, f"http://127.0.0.1:{ma_port}/plaintext"),
        ]

    results = run_rounds(targets)

    med = {k: statistics.median(x["rps"] for x in v) for k, v in results.items()}
    print()
    print(f"{'test':10} {'server':30} {'req/s (median)':>15}  per round")
    for test, name, _, _ in targets:
        per = ", ".join(f"{x['rps']:,.0f}" for x in results[(test, name)])
        print(f"{test:10} {name:30} {med[(test, name)]:>15,.0f}  {per}")
    print()

    def ratio(test, a, b, goal):
        r = med[(test, a)] / med[(test, b)]
        per = [x["rps"] / y["rps"] for x, y in zip(results[(test, a)], results[(test, b)])]
        verdict = "met" if r >= goal else "MISSED"
        print(f"{test}: {a}/{b} = {r:.2f}  (goal >= {goal}: {verdict}; per round "
              + ", ".join(f"{p:.2f}" for p in per) + ")")

    ratio("fortunes", "mantissa", "reference", 0.7)
    ratio("plaintext", "mantissa", "bare-hyper", 0.8)
    if ANALYSIS:
        for n in ["reference, query on worker", "mantissa, store read on worker",
                  "mantissa handlers, no layers", "same, store read on worker",
                  "same, at most 4 reads at once", "same, axum::serve"]:
            print(f"fortunes: {n} / reference = {med[('fortunes', n)] / med[('fortunes', 'reference')]:.2f}")
        for n in ["reference (axum)", "mantissa handlers, no layers", "same, axum::serve"]:
            print(f"plaintext: {n} / bare-hyper = {med[('plaintext', n)] / med[('plaintext', 'bare-hyper')]:.2f}")
    print(f"mantissa-fortunes after the load: VmRSS {vm(mf.pid, 'VmRSS'):.1f} MiB, peak {vm(mf.pid, 'VmHWM'):.1f} MiB")
    stop_all()
    started.clear()

    if MANTISSA:
        print()
        print(f"the mantissa binary: {MANTISSA} serve --listen 127.0.0.1:PORT --site DIR")

        def one_start(site):
            port = PORT
            while not port_free(port):
                port += 1
            t0 = time.monotonic()
            p = subprocess.Popen([MANTISSA, "serve", "--listen", f"127.0.0.1:{port}", "--site", site],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append(p)
            while True:
                if p.poll() is not None:
                    sys.exit(f"mantissa serve exited with {p.returncode}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                        first = s.recv(64)
                        if first.startswith(b"HTTP/1.1 "):
                            break
                except OSError:
                    pass
                time.sleep(0.001)
            elapsed = (time.monotonic() - t0) * 1000
            status = first.split()[1].decode()
            time.sleep(2)  # idle
            rss = vm(p.pid, "VmRSS")
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)
            started.remove(p)
            return elapsed, rss, status

        for label, fresh in [("new site (created at start)", True), ("existing site", False)]:
            times, rsss, statuses = [], [], set()
            base = tempfile.mkdtemp(prefix="mantissa-web-bench-")
            try:
                if not fresh:
                    one_start(os.path.join(base, "site"))  # creates it; not counted
                for i in range(5):
                    site = os.path.join(base, f"site{i}" if fresh else "site")
                    e, r, s = one_start(site)
                    times.append(e)
                    rsss.append(r)
                    statuses.add(s)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            print(f"{label}: start to first answer (GET /, status {'/'.join(sorted(statuses))}) "
                  f"median {statistics.median(times):.0f} ms [{', '.join(f'{t:.0f}' for t in times)}]; "
                  f"idle VmRSS median {statistics.median(rsss):.1f} MiB [{', '.join(f'{r:.1f}' for r in rsss)}]")
        print("goals: start-up < 200 ms, idle memory < 30 MB")
finally:
    stop_all()
EOF
