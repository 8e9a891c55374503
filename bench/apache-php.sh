#!/usr/bin/env bash
# The LAMP reference for Fortunes: Debian's apache2 + mod_php + MariaDB, in
# their default configuration, serving TechEmpower's Fortunes page from
# fortunes.php (PDO + htmlspecialchars), loaded with the same wrk as
# bench/web.sh, alternately with Mantissa's mantissa-fortunes. Goal:
# Mantissa >= 5x Apache + PHP. A benchmark run by hand, as root, on a
# machine where installing these packages is fine: it is not part of CI.
#
#   sudo bench/apache-php.sh
#
# Environment: APACHE_PORT (18180), WEB_ROUNDS (3), WEB_DURATION (8s),
# WEB_WARMUP (2s), WEB_CONNECTIONS (64), WEB_THREADS (2).
#
# What it changes on the machine: installs apache2, libapache2-mod-php,
# php-mysql and mariadb-server (and wrk); creates the MariaDB database
# hello_world with user benchmarkdbuser; writes /var/www/html/fortunes.php
# and /etc/apache2/conf-available/mantissa-bench.conf; replaces
# /etc/apache2/ports.conf while it runs (so that Apache listens on
# 127.0.0.1:APACHE_PORT only, not on port 80 of every interface) and puts it
# back afterwards. It starts MariaDB and Apache and stops both at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
port=${APACHE_PORT:-18180}

if [ "$(id -u)" != 0 ]; then
    echo "run as root: it installs and starts Apache and MariaDB" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Packages must not start their services with the default configuration
# (Apache on port 80 of every interface) while being installed.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
install_ok=1
echo "installing apache2, libapache2-mod-php, php-mysql, mariadb-server, wrk…" >&2
apt-get install -y -qq apache2 libapache2-mod-php php-mysql mariadb-server wrk >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq apache2 libapache2-mod-php php-mysql mariadb-server wrk >/dev/null; } ||
    install_ok=0
[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
[ "$install_ok" = 1 ] || { echo "apt-get install failed" >&2; exit 1; }

echo "versions: $(apache2 -v | head -1 | sed 's/Server version: //'); PHP $(php -r 'echo PHP_VERSION;'); $(mariadbd --version 2>/dev/null || mysqld --version)" >&2
echo "Apache MPM: $(apache2ctl -V 2>/dev/null | grep -i 'Server MPM' | awk '{print $3}')" >&2

if pgrep -x apache2 >/dev/null; then
    echo "Apache is already running: stop it first (this script starts and stops its own)" >&2
    exit 1
fi

ports_backup=$(mktemp)
cp /etc/apache2/ports.conf "$ports_backup"
started_mariadb=0
started_apache=0
mantissa_pid=""
cleanup() {
    set +e
    [ -n "$mantissa_pid" ] && kill "$mantissa_pid" 2>/dev/null && wait "$mantissa_pid" 2>/dev/null
    if [ "$started_apache" = 1 ]; then
        apache2ctl -k stop 2>/dev/null || service apache2 stop
        sleep 1
    fi
    cp "$ports_backup" /etc/apache2/ports.conf && rm -f "$ports_backup"
    a2disconf -q mantissa-bench >/dev/null 2>&1
    if [ "$started_mariadb" = 1 ]; then
        service mariadb stop >/dev/null 2>&1 || mysqladmin --protocol=socket -uroot shutdown
    fi
}
trap cleanup EXIT

# MariaDB (Debian's default configuration: listens on 127.0.0.1 and the
# socket; root logs in over the socket as the system's root).
if ! mysqladmin --protocol=socket -uroot status >/dev/null 2>&1; then
    if ! service mariadb start >/dev/null 2>&1; then
        echo "service mariadb start failed; starting mariadbd_safe directly" >&2
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (mysqld_safe >/dev/null 2>&1 &)
    fi
    for _ in $(seq 100); do
        mysqladmin --protocol=socket -uroot status >/dev/null 2>&1 && break
        sleep 0.2
    done
    started_mariadb=1
fi
mysqladmin --protocol=socket -uroot status >/dev/null

mysql --protocol=socket -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS hello_world CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'benchmarkdbuser'@'localhost' IDENTIFIED BY 'benchmarkdbpass';
GRANT SELECT ON hello_world.* TO 'benchmarkdbuser'@'localhost';
USE hello_world;
DROP TABLE IF EXISTS Fortune;
CREATE TABLE Fortune (
  id int(10) unsigned NOT NULL auto_increment,
  message varchar(2048) CHARACTER SET 'utf8mb4' NOT NULL,
  PRIMARY KEY (id)
) ENGINE=INNODB DEFAULT CHARSET=utf8mb4;
INSERT INTO Fortune (message) VALUES ('fortune: No such file or directory');
INSERT INTO Fortune (message) VALUES ('A computer scientist is someone who fixes things that aren''t broken.');
INSERT INTO Fortune (message) VALUES ('After enough decimal places, nobody gives a damn.');
INSERT INTO Fortune (message) VALUES ('A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1');
INSERT INTO Fortune (message) VALUES ('A computer program does what you tell it to do, not what you want it to do.');
INSERT INTO Fortune (message) VALUES ('Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen');
INSERT INTO Fortune (message) VALUES ('Any program that runs right is obsolete.');
INSERT INTO Fortune (message) VALUES ('A list is only as strong as its weakest link. — Donald Knuth');
INSERT INTO Fortune (message) VALUES ('Feature: A bug with seniority.');
INSERT INTO Fortune (message) VALUES ('Computers make very fast, very accurate mistakes.');
INSERT INTO Fortune (message) VALUES ('<script>alert("This should not be displayed in a browser alert box.");</script>');
INSERT INTO Fortune (message) VALUES ('フレームワークのベンチマーク');
SQL

cat >/var/www/html/fortunes.php <<'PHP'
<?php
// TechEmpower's Fortunes, as PHP's own benchmark implementation writes it.
$pdo = new PDO('mysql:host=localhost;dbname=hello_world;charset=utf8mb4', 'benchmarkdbuser', 'benchmarkdbpass', [
    PDO::ATTR_PERSISTENT => true,
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
]);
$fortunes = $pdo->query('SELECT id, message FROM Fortune')->fetchAll(PDO::FETCH_KEY_PAIR);
$fortunes[0] = 'Additional fortune added at request time.';
asort($fortunes);
header('Content-Type: text/html; charset=utf-8');
?><!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr><?php foreach ($fortunes as $id => $message): ?><tr><td><?= $id ?></td><td><?= htmlspecialchars($message, ENT_QUOTES, 'UTF-8') ?></td></tr><?php endforeach ?></table></body></html>
PHP

# Apache: the packaged configuration, listening on 127.0.0.1:$port only.
printf '# bench/apache-php.sh (the original is put back when it ends)\nListen 127.0.0.1:%s\n' "$port" >/etc/apache2/ports.conf
cat >/etc/apache2/conf-available/mantissa-bench.conf <<CONF
# bench/apache-php.sh: the default site, on the benchmark's address.
<VirtualHost 127.0.0.1:$port>
    DocumentRoot /var/www/html
</VirtualHost>
CONF
a2enconf -q mantissa-bench >/dev/null
apache2ctl configtest 2>&1 | grep -v "^Syntax OK" | grep -v AH00558 || true
if ! apache2ctl -k start; then
    echo "apache2ctl -k start failed" >&2
    exit 1
fi
started_apache=1

echo "building mantissa-fortunes (release)…" >&2
cargo build --release -q -p mantissa-bench-web
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mantissa_port=$((port + 1))
"$target_dir/release/mantissa-fortunes" "127.0.0.1:$mantissa_port" >/dev/null 2>&1 &
mantissa_pid=$!

CROSS_CPU="$target_dir/release/cross-cpu" APACHE_URL="http://127.0.0.1:$port/fortunes.php" MANTISSA_URL="http://127.0.0.1:$mantissa_port/fortunes" \
    MANTISSA_PID="$mantissa_pid" python3 - <<'EOF'
import html
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

ROUNDS = int(os.environ.get("WEB_ROUNDS", "3"))
DURATION = os.environ.get("WEB_DURATION", "8s")
WARMUP = os.environ.get("WEB_WARMUP", "2s")
CONNS = int(os.environ.get("WEB_CONNECTIONS", "64"))
THREADS = int(os.environ.get("WEB_THREADS", "2"))
if not re.fullmatch(r"([1-9]|10)s", DURATION):
    sys.exit(f"WEB_DURATION must be 1s to 10s, not {DURATION}")
apache, mantissa = os.environ["APACHE_URL"], os.environ["MANTISSA_URL"]


def fetch(url, timeout=20.0):
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except OSError as e:
            if time.monotonic() > end:
                sys.exit(f"{url}: {e}")
            time.sleep(0.05)


def rows(page):
    return [(int(i), html.unescape(m)) for i, m in
            re.findall(r"<tr><td>(-?\d+)</td><td>(.*?)</td></tr>", page)]


sa, pa = fetch(apache)
sm, pm = fetch(mantissa)
if sa != 200 or rows(pa) != rows(pm) or len(rows(pa)) != 13 or "<script>" in pa:
    print(pa[:2000])
    sys.exit("Apache's fortunes.php does not send the same 13 rows as Mantissa")
print("check: Apache + PHP and Mantissa send the same 13 rows, sorted, escaped")


def wrk(url, d):
    out = subprocess.run(["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{d}", url],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    return rps, (bad.group(1) + " non-2xx " if bad else "") + (errs.group(0) if errs else "")


def cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def wait_quiet():
    """Waits (up to two minutes) until the CPUs are nearly idle (< 10 %)."""
    end = time.monotonic() + 120
    while True:
        b0, t0 = cpu_busy()
        time.sleep(1)
        b1, t1 = cpu_busy()
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy < 10 or time.monotonic() > end:
            return busy
        time.sleep(2)


def cross_cpu():
    """The machine's cross-CPU latency just now (`cross-cpu`, in ns)."""
    out = subprocess.run([os.environ["CROSS_CPU"], "200000"],
                         check=True, capture_output=True, text=True).stdout
    return int(re.search(r"(\d+) ns", out).group(1))


NCPU = os.cpu_count() or 1
HZ = os.sysconf("SC_CLK_TCK")
res = {"apache + mod_php + mariadb": [], "mantissa": []}
pairs = [("apache + mod_php + mariadb", apache), ("mantissa", mantissa)]
for rnd in range(1, ROUNDS + 1):
    for name, url in (pairs if rnd % 2 else pairs[::-1]):
        quiet = wait_quiet()
        xcpu = cross_cpu()
        wrk(url, WARMUP)
        b0, t0 = cpu_busy()
        c0 = os.times()
        rps, note = wrk(url, DURATION)
        c1 = os.times()
        b1, t1 = cpu_busy()
        total = max(1, t1 - t0)
        client = 100.0 * NCPU * ((c1.children_user + c1.children_system)
                                 - (c0.children_user + c0.children_system)) * HZ / total
        rest = 100.0 * NCPU * (b1 - b0) / total - client
        res[name].append(rps)
        print(f"  round {rnd}  fortunes  {name:28} {rps:>10,.0f} req/s  cpu: wrk {client:4.0f}%  "
              f"server and everything else {rest:4.0f}%  (idle check before: {quiet:.0f}% busy; "
              f"cross-CPU {xcpu} ns)  {note}",
              flush=True)
med = {k: statistics.median(v) for k, v in res.items()}
print()
for k, v in med.items():
    print(f"fortunes  {k:28} {v:>10,.0f} req/s (median of {ROUNDS})")
r = med["mantissa"] / med["apache + mod_php + mariadb"]
rounds = ", ".join(f"{m / a:.1f}" for m, a in zip(res["mantissa"], res["apache + mod_php + mariadb"]))
print(f"fortunes: mantissa / apache+php = {r:.1f}x  (goal >= 5x: {'met' if r >= 5 else 'MISSED'}; "
      f"per round {rounds})")
EOF
