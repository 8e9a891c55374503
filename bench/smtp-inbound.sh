#!/usr/bin/env bash
# Inbound mail (issue 16, "Speed"): messages a second accepted over SMTP and
# delivered into the recipient's store by `mantissa serve`, against Postfix's
# smtpd delivering to a Maildir on the same machine, in the same run, with
# the same load: Postfix's own smtp-source, the same messages, the same
# number of parallel sessions, the same recipient. Goal: Mantissa / Postfix
# >= 1x. A benchmark run by hand, as root, on a throwaway test machine (it
# starts and stops a Postfix instance of its own): it is not part of CI.
#
#   sudo bench/smtp-inbound.sh
#   SMTP_MESSAGES=200 SMTP_ROUNDS=1 SMTP_QUIET=100 bench/smtp-inbound.sh
#                        (as root: a quick check that it works, no figure)
#
# Environment: SMTP_MESSAGES (10000 a run), SMTP_SESSIONS (20 in parallel),
# SMTP_SIZE (4096: smtp-source's -l, the body's bytes; the headers add about
# 150), SMTP_ROUNDS (3), SMTP_REUSE (0: a connection per message, as mail
# from many senders arrives; 1: smtp-source -d, each session's connection
# sends message after message), SMTP_PIN (both: an unpinned pass, then a pinned one; no; only),
# SMTP_QUIET (10: before each run, wait up to two minutes until other
# processes use less than this % of the CPUs; 100: do not wait), SMTP_DIR
# (/var/tmp: where the sites, Postfix's queue and the Maildirs go, on one
# file system), SMTP_KEEP (1: keep them, and the logs, afterwards),
# MANTISSA_BIN (the binary to measure; built with `cargo build --release
# -p mantissa` if unset), SMTP_CHECKS (off: Mantissa checks no sender, as
# this Postfix does not; on: SPF, DKIM and DMARC lookups for each message,
# which on a machine whose resolver does not answer cost up to 2 s a message).
#
# Each run is, for both servers,
#   smtp-source -s SESSIONS -m MESSAGES -l SIZE -S SUBJECT \
#     -f bob@example.net -t ann@example.org 127.0.0.1:PORT
# (no -c, which only prints a counter; -d with SMTP_REUSE=1).
#
# - Mantissa: a new site each run (`init`, `mail set --from
#   site@example.org`, `user add ann`, `port add smtp 127.0.0.1:PORT`), then
#   `mantissa serve`. A message answered 250 is committed into ann's store
#   (an item, the raw message its attached file), so the time is from
#   starting smtp-source to its exit. After the run the server is stopped
#   (SIGTERM) and ann's store must hold exactly MESSAGES inbound mails
#   (`mantissa store stats --json`), or the script fails.
# - Postfix (Debian 12's 3.7): an instance of its own, its configuration,
#   queue and mail in a temporary folder (`postfix -c DIR`; as root, no
#   `alternate_config_directories` is needed in /etc/postfix/main.cf, which
#   is not touched): smtpd on 127.0.0.1:PORT only, no chroot,
#   `mynetworks = 127.0.0.0/8`, `smtpd_peername_lookup = no`, no DNS,
#   `virtual_mailbox_domains = example.org`, ann@example.org delivered by
#   virtual(8) to the Maildir `ann/` as nobody:nogroup, everything else at
#   Postfix's defaults, its log in a file (maillog_file). Acceptance is into
#   its queue and delivery follows asynchronously, so the time is from
#   starting smtp-source until the last of the MESSAGES files is in
#   Maildir/new (the folder's modification time once they are all there;
#   the script fails if they are not all there within a time limit, or if
#   the queue is not empty). It is started for each run on an empty
#   Maildir and stopped after it.
#
# A round runs Mantissa and Postfix back to back, every other round in the
# other order; the figure is the median over rounds (messages a second),
# printed with each round's ratio. Then a second pass the same way with the
# server pinned to CPU 1 and smtp-source to CPU 0 (`taskset`; for Postfix
# the `postfix start` command, so its master and every process it starts
# inherit CPU 1). Each run also prints the server's CPU time per message
# (Mantissa's process; Postfix's master and all its children, living or
# reaped) and smtp-source's share of a CPU.
set -euo pipefail

cd "$(dirname "$0")/.."

messages=${SMTP_MESSAGES:-10000}
sessions=${SMTP_SESSIONS:-20}
size=${SMTP_SIZE:-4096}
rounds=${SMTP_ROUNDS:-3}
reuse=${SMTP_REUSE:-0}
pin=${SMTP_PIN:-both}
quiet=${SMTP_QUIET:-10}
base=${SMTP_DIR:-/var/tmp}

if [ "$(id -u)" != 0 ]; then
    echo "run as root: it starts and stops a Postfix instance of its own" >&2
    exit 1
fi
for n in "$messages" "$sessions" "$size" "$rounds" "$quiet"; do
    case "$n" in
    '' | *[!0-9]*)
        echo "SMTP_MESSAGES, SMTP_SESSIONS, SMTP_SIZE, SMTP_ROUNDS and SMTP_QUIET are whole numbers" >&2
        exit 2
        ;;
    esac
done
case "$pin" in both | no | only) ;; *)
    echo "SMTP_PIN is both, no or only" >&2
    exit 2
    ;;
esac
for tool in smtp-source postfix postconf postqueue python3 taskset; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$tool" >/dev/null || {
        echo "$tool is needed (apt-get install postfix python3 util-linux)" >&2
        exit 1
    }
done
if [ "$(nproc)" -lt 2 ] && [ "$pin" != no ]; then
    echo "pinning needs two CPUs: set SMTP_PIN=no" >&2
    exit 1
fi

if [ -z "${MANTISSA_BIN:-}" ]; then
    echo "building mantissa (release)…" >&2
    cargo build --release -q -p mantissa
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    MANTISSA_BIN="$target_dir/release/mantissa"
fi
[ -x "$MANTISSA_BIN" ] || { echo "no mantissa binary at $MANTISSA_BIN" >&2; exit 1; }

work=$(mktemp -d "$base/smtp-inbound.XXXXXX")
# Postfix's daemons (as postfix) and virtual(8) (as nobody) go through it.
chmod 755 "$work"
pf="$work/postfix"
# The measuring part stops each server it starts; this is for the rest.
cleanup() {
    set +e
    if [ -f "$pf/spool/pid/master.pid" ] && kill -0 "$(tr -d ' ' <"$pf/spool/pid/master.pid")" 2>/dev/null; then
        postfix -c "$pf/etc" stop >/dev/null 2>&1 || postfix -c "$pf/etc" abort >/dev/null 2>&1
    fi
    if [ "${SMTP_KEEP:-0}" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Two free ports on 127.0.0.1: Postfix's, Mantissa's.
read -r postfix_port mantissa_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')

# The Postfix instance: Debian's master.cf without chroot, smtpd on
# 127.0.0.1:$postfix_port instead of port 25.
mkdir -p "$pf/etc" "$pf/spool" "$pf/data" "$pf/mail"
chown postfix "$pf/data"
chown nobody:nogroup "$pf/mail"
cp /etc/postfix/master.cf "$pf/etc/master.cf"
cat >"$pf/etc/main.cf" <<EOF
# bench/smtp-inbound.sh: a throwaway instance (postfix -c $pf/etc).
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
maillog_file = $pf/maillog
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_banner = \$myhostname ESMTP
virtual_mailbox_domains = example.org
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = texthash:$pf/etc/vmailbox
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(getent group nogroup | cut -d: -f3)
EOF
echo "ann@example.org ann/" >"$pf/etc/vmailbox"
postconf -c "$pf/etc" -F '*/*/chroot = n'
postconf -c "$pf/etc" -MX smtp/inet
postconf -c "$pf/etc" -M "127.0.0.1:$postfix_port/inet = 127.0.0.1:$postfix_port inet n - n - - smtpd"
postfix -c "$pf/etc" check

echo "versions: Postfix $(postconf -h mail_version); $("$MANTISSA_BIN" --version 2>/dev/null || echo mantissa); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
echo "load: $messages messages of $size bytes, $sessions sessions, $([ "$reuse" = 1 ] && echo 'connections reused (-d)' || echo 'a connection per message'); rounds: $rounds; pinning: $pin" >&2

MANTISSA_BIN="$MANTISSA_BIN" WORK="$work" PF="$pf" POSTFIX_PORT="$postfix_port" MANTISSA_PORT="$mantissa_port" \
    MESSAGES="$messages" SESSIONS="$sessions" SIZE="$size" ROUNDS="$rounds" REUSE="$reuse" PIN="$pin" QUIET="$quiet" \
    python3 - <<'EOF'
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BIN, WORK, PF = os.environ["MANTISSA_BIN"], os.environ["WORK"], os.environ["PF"]
PF_ETC = os.path.join(PF, "etc")
PF_PORT, M_PORT = int(os.environ["POSTFIX_PORT"]), int(os.environ["MANTISSA_PORT"])
N, SESSIONS, SIZE = int(os.environ["MESSAGES"]), int(os.environ["SESSIONS"]), int(os.environ["SIZE"])
ROUNDS, REUSE, PIN = int(os.environ["ROUNDS"]), os.environ["REUSE"] == "1", os.environ["PIN"]
QUIET = int(os.environ["QUIET"])
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
# Postfix must have delivered everything within this long after
# smtp-source ends (far more than it needs; a stuck delivery fails).
DRAIN_LIMIT = 60 + N / 50


def fail(why):
    sys.exit(f"FAILED: {why}")


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout


def cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def wait_quiet():
    """Waits (up to two minutes) until the CPUs are less than QUIET % busy."""
    if QUIET >= 100:
        return None
    end = time.monotonic() + 120
    while True:
        b0, t0 = cpu_busy()
        time.sleep(1)
        b1, t1 = cpu_busy()
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy < QUIET or time.monotonic() > end:
            return busy
        time.sleep(2)


def proc_cpu(pid):
    """utime + stime + cutime + cstime of a process, in ticks; its parent."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]), int(fields[1])


def tree_cpu(root):
    """CPU ticks of `root` (with its reaped children) and of its living
    children: all that Postfix's master and the daemons it started used."""
    total = proc_cpu(root)[0]
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != root:
            try:
                ticks, ppid = proc_cpu(p)
            except (OSError, IndexError):
                continue
            if ppid == root:
                total += ticks
    return total


def wait_port(port, timeout=20):
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.recv(512)
                return
        except OSError as e:
            if time.monotonic() > end:
                fail(f"nothing answers on 127.0.0.1:{port}: {e}")
            time.sleep(0.05)


def smtp_source(port, pinned):
    cmd = ["smtp-source", "-s", str(SESSIONS), "-m", str(N), "-l", str(SIZE),
           "-S", "Inbound benchmark", "-f", "bob@example.net", "-t", "ann@example.org"]
    if REUSE:
        cmd.insert(1, "-d")
    cmd.append(f"127.0.0.1:{port}")
    if pinned:
        cmd = ["taskset", "-c", "0"] + cmd
    return cmd


def measured(cmd):
    """Runs smtp-source: (start, end, its CPU share in % of one CPU);
    fails if it does (a refused or broken session is an error there)."""
    c0 = os.times()
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    end = time.time()
    c1 = os.times()
    if r.returncode != 0 or r.stderr.strip():
        fail(f"smtp-source: exit {r.returncode}\n{r.stderr[-2000:]}")
    cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    return start, end, 100.0 * cpu / max(1e-9, end - start)


def mantissa_run(tag, pinned):
    site = os.path.join(WORK, f"site-{tag}")
    m = lambda *a: run(BIN, "--site", site, *a)
    run(BIN, "init", site)
    m("mail", "set", "--from", "site@example.org")
    m("user", "add", "ann", "--email", "ann@example.net")
    m("port", "add", "smtp", f"127.0.0.1:{M_PORT}")
    cmd = [BIN, "serve", "--site", site]
    if pinned:
        cmd = ["taskset", "-c", "1"] + cmd
    log = open(os.path.join(WORK, f"mantissa-{tag}.log"), "w")
    # Postfix here checks no sender (SPF, DKIM, DMARC); Mantissa does by
    # default, a few DNS lookups a message: off, for the same work, unless
    # SMTP_CHECKS=on.
    env = dict(os.environ)
    if os.environ.get("SMTP_CHECKS", "off") != "on":
        env["MANTISSA_SMTP_CHECKS"] = "off"
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    said = ""
    for line in server.stdout:
        said += line
        if line.startswith("Press Ctrl-C"):
            break
    # Whatever else it prints is read, so that it never waits on the pipe.
    threading.Thread(target=server.stdout.read, daemon=True).start()
    if f"Mail on smtp://127.0.0.1:{M_PORT}" not in said:
        server.kill()
        fail(f"mantissa serve did not say it receives mail on {M_PORT}:\n{said}")
    wait_port(M_PORT)
    try:
        quiet = wait_quiet()
        cpu0 = proc_cpu(server.pid)[0]
        b0, t0 = cpu_busy()
        start, end, client = measured(smtp_source(M_PORT, pinned))
        b1, t1 = cpu_busy()
        cpu1 = proc_cpu(server.pid)[0]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
    if code != 0:
        fail(f"mantissa serve exited {code} when stopped (log: {log.name})")
    stats = json.loads(m("store", "stats", "--json"))
    items, files = count_inbound(stats)
    if items != N or files != N:
        fail(f"ann's store holds {items} inbound mails and {files} files, not {N} (log: {log.name})")
    return {"rate": N / (end - start), "seconds": end - start, "accepted": N / (end - start),
            "cpu_ms": 1000.0 * (cpu1 - cpu0) / HZ / N, "client": client,
            "busy": 100.0 * NCPU * (b1 - b0) / max(1, t1 - t0), "quiet": quiet}


def count_inbound(stats):
    """ann's inbound mails and attached files, from `store stats --json`."""
    ann = [st for st in stats["stores"] if st["name"] == "ann"]
    if len(ann) != 1:
        fail(f"no store of ann in {json.dumps(stats)[:2000]}")
    items = (ann[0].get("items") or {}).get("mantissa.inbound_mail", 0)
    files = (ann[0].get("files") or {}).get("count", 0)
    return items, files


def postfix_master():
    try:
        with open(os.path.join(PF, "spool", "pid", "master.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def postfix_run(tag, pinned):
    maildir = os.path.join(PF, "mail", "ann")
    subprocess.run(["rm", "-rf", maildir], check=True)
    cmd = ["postfix", "-c", PF_ETC, "start"]
    if pinned:
        cmd = ["taskset", "-c", "1"] + cmd
    run(*cmd)
    try:
        wait_port(PF_PORT)
        master = postfix_master()
        if master is None:
            fail("Postfix's master is not running")
        if pinned:
            aff = os.sched_getaffinity(master)
            if aff != {1}:
                fail(f"Postfix's master runs on CPUs {aff}, not 1")
        quiet = wait_quiet()
        cpu0 = tree_cpu(master)
        b0, t0 = cpu_busy()
        start, accepted, client = measured(smtp_source(PF_PORT, pinned))
        new = os.path.join(maildir, "new")
        limit = time.monotonic() + DRAIN_LIMIT
        while True:
            try:
                got = sum(1 for _ in os.scandir(new))
            except FileNotFoundError:
                got = 0
            if got >= N:
                break
            if time.monotonic() > limit:
                fail(f"{got} of {N} messages in {new} after {DRAIN_LIMIT:.0f} s (log: {PF}/maillog)")
            time.sleep(0.02)
        # The last file's arrival: when new/ last changed.
        end = os.stat(new).st_mtime
        b1, t1 = cpu_busy()
        cpu1 = tree_cpu(master)
        if got != N:
            fail(f"{got} messages in {new}, not {N}")
        left = os.listdir(os.path.join(maildir, "tmp"))
        if left:
            fail(f"{len(left)} files left in {maildir}/tmp")
        queue = run("postqueue", "-c", PF_ETC, "-p")
        if "Mail queue is empty" not in queue:
            fail(f"Postfix's queue is not empty:\n{queue[:2000]}")
    finally:
        subprocess.run(["postfix", "-c", PF_ETC, "stop"], capture_output=True)
        for _ in range(200):
            if postfix_master() is None:
                break
            time.sleep(0.05)
        else:
            subprocess.run(["postfix", "-c", PF_ETC, "abort"], capture_output=True)
    return {"rate": N / (end - start), "seconds": end - start, "accepted": N / (accepted - start),
            "cpu_ms": 1000.0 * (cpu1 - cpu0) / HZ / N, "client": client,
            "busy": 100.0 * NCPU * (b1 - b0) / max(1, t1 - t0), "quiet": quiet}


TARGETS = [("mantissa", mantissa_run), ("postfix", postfix_run)]
passes = {"both": [False, True], "no": [False], "only": [True]}[PIN]
summary = []
for pinned in passes:
    label = "pinned (server CPU 1, smtp-source CPU 0)" if pinned else "unpinned"
    print(f"\n{label}:", flush=True)
    res = {name: [] for name, _ in TARGETS}
    for rnd in range(1, ROUNDS + 1):
        for name, fn in (TARGETS if rnd % 2 else TARGETS[::-1]):
            r = fn(f"{'p' if pinned else 'u'}{rnd}", pinned)
            res[name].append(r)
            extra = f"accepted {r['accepted']:>8,.0f}/s  " if name == "postfix" else " " * 22
            quiet = "" if r["quiet"] is None else f"  (idle check before: {r['quiet']:.0f}% busy)"
            print(f"  round {rnd}  {name:9} {r['rate']:>8,.0f} messages/s  {r['seconds']:6.2f} s  {extra}"
                  f"server {r['cpu_ms']:.3f} ms CPU a message  smtp-source {r['client']:3.0f}% of a CPU  "
                  f"all CPUs {r['busy']:3.0f}%{quiet}", flush=True)
    med = {k: statistics.median(x["rate"] for x in v) for k, v in res.items()}
    cpu = {k: statistics.median(x["cpu_ms"] for x in v) for k, v in res.items()}
    ratio = med["mantissa"] / med["postfix"]
    per_round = ", ".join(f"{m['rate'] / p['rate']:.2f}" for m, p in zip(res["mantissa"], res["postfix"]))
    summary.append((label, med, cpu, ratio, per_round))

print()
print(f"inbound mail: {N:,} messages of {SIZE:,} bytes, {SESSIONS} sessions, "
      f"{'connections reused (-d)' if REUSE else 'a connection per message'}; medians of {ROUNDS}")
print(f"  {'':42} {'mantissa':>16} {'postfix':>16} {'mantissa/postfix':>17}")
for label, med, cpu, ratio, per_round in summary:
    print(f"  {label:42} {med['mantissa']:>10,.0f} msg/s {med['postfix']:>10,.0f} msg/s {ratio:>16.2f}x"
          f"  (goal >= 1x: {'met' if ratio >= 1 else 'MISSED'}; per round {per_round})")
    print(f"  {'  server CPU a message':42} {cpu['mantissa']:>13.3f} ms {cpu['postfix']:>13.3f} ms "
          f"{cpu['mantissa'] / max(1e-9, cpu['postfix']):>16.2f}x")
EOF
