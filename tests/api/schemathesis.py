"""The JSON API against its own OpenAPI document (issue 14, item 10).

Creates a notes site (`mantissa-notes-site`: `mantissa` plus the testkit's
notes offering) in a temporary folder with a user and an administrator,
serves it on a free loopback port, logs each in through the /login form
and makes a write token on the settings page (as a person would), then
runs schemathesis against /api/openapi.json twice: with the user's token
over every operation but the admin console's, then with the
administrator's over the console's (tag `admin`), so that the private
routes are exercised as well as the public ones. Every check runs
(`--checks all`: no server errors, responses that match their schemas,
status codes and content types that the document names, bad input
refused, good input accepted, operations that need the token refusing a
request without it).

Run by .ci/test with the venv's python (standard library only here); the
binary is $NOTES_SITE_BIN, or $CARGO_TARGET_DIR/debug/mantissa-notes-site
(target/ by default). Prints schemathesis's report, then one line the test
command's total reads: "schemathesis: N passed, M failed", N and M counting
the API's operations. Exit status 0 only if no check failed.
"""

import http.cookiejar
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BIN = os.environ.get("NOTES_SITE_BIN") or os.path.join(TARGET, "debug", "mantissa-notes-site")
ST = os.path.join(os.path.dirname(sys.executable), "st")
USER, PASSWORD = "ann", "ann's long password for the API tests"
ADMIN, ADMIN_PASSWORD = "root", "root's long password for the API tests"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, stdin=""):
    subprocess.run([BIN, *args], input=stdin, text=True, check=True, capture_output=True)


def wait_for(url, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the site stopped: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise SystemExit(f"the site did not answer {url} within {seconds} s")


def write_token(base, user, password):
    """Logs in as `user` through the form, and makes a write token on the settings page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def csrf_of(html):
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        if not m:
            raise SystemExit(f"no form with a CSRF token in:\n{html[:2000]}")
        return m.group(1)

    def post(path, fields):
        data = urllib.parse.urlencode(fields).encode()
        try:
            with opener.open(urllib.request.Request(base + path, data=data)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(path):
        with opener.open(base + path) as r:
            return r.read().decode()

    status, page = post(
        "/login", {"csrf_token": csrf_of(get("/login")), "who": user, "password": password}
    )
    if status != 303:
        raise SystemExit(f"log-in failed ({status}):\n{page[:2000]}")
    settings = get("/private/settings")
    status, page = post(
        "/private/settings/tokens",
        {"csrf_token": csrf_of(settings), "name": "schemathesis", "write": "1"},
    )
    if status in (301, 302, 303):
        page = get("/private/settings")
    m = re.search(r"mt_[A-Za-z0-9_-]{43}", page)
    if not m:
        raise SystemExit(f"no new token shown ({status}):\n{page[:3000]}")
    return m.group(0)


def published_note(base, token):
    """Writes the note the config's `shared_item` parameters name, through the API."""
    req = urllib.request.Request(
        base + "/api/private/notes",
        data=b'{"title": "Published for the tests", "body": "Read by schemathesis."}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        location = r.headers.get("Location")
        if r.status != 201 or location != "/api/users/ann/published-for-the-tests":
            raise SystemExit(f"writing a note answered {r.status}, Location {location}")


def schemathesis(base, work, name, bearer, scope):
    """One run over the operations `scope` selects, with `bearer`: (passed, failed)."""
    junit = os.path.join(work, f"junit-{name}.xml")
    # One worker (with two, Python 3.11's ast module races in hypothesis:
    # "AST constructor recursion depth mismatch", a CPython race), and
    # fewer requests a second than the site's limit for one address
    # (100), so that schemathesis tests the API, not the rate limit. A fixed seed: the same cases every run, so that
    # a failure can be repeated.
    st = subprocess.run(
        [
            ST, "--no-color", "--config-file", os.path.join(HERE, "schemathesis.toml"),
            "run", base + "/api/openapi.json",
            *scope,
            "--header", f"Authorization: Bearer {bearer}",
            "--checks", "all",
            "--workers", "1",
            "--rate-limit", "80/s",
            "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "50"),
            "--seed", os.environ.get("SCHEMATHESIS_SEED", "14"),
            "--request-timeout", "10",
            "--report", "junit",
            "--report-junit-path", junit,
            "--output-sanitize", "true",
            "--generation-database", "none",
        ],
        # Its cache folder (.schemathesis) goes with the site, not
        # into the checkout.
        cwd=work,
    )
    passed = failed = 0
    if os.path.exists(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            else:
                passed += 1
    if st.returncode != 0 and failed == 0:
        failed = 1
    return passed, failed


def main():
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} not found: cargo build -p mantissa-notes-site first")
    work = tempfile.mkdtemp(prefix="mantissa-api-")
    site = os.path.join(work, "site")
    proc = None
    try:
        run("--site", site, "init")
        run("--site", site, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
        run(
            "--site", site, "user", "add", ADMIN, "--admin", "--password-stdin",
            stdin=ADMIN_PASSWORD + "\n",
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [BIN, "--site", site, "serve", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(base + "/healthz", proc)
        token = write_token(base, USER, PASSWORD)
        admin_token = write_token(base, ADMIN, ADMIN_PASSWORD)
        published_note(base, token)
        passed = failed = 0
        for name, bearer, scope in [
            ("user", token, ["--exclude-tag", "admin"]),
            ("admin", admin_token, ["--include-tag", "admin"]),
        ]:
            p, f = schemathesis(base, work, name, bearer, scope)
            passed += p
            failed += f
        print(f"schemathesis: {passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
