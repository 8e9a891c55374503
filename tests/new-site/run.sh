#!/usr/bin/env bash
# `mantissa new` as an application developer meets it: makes a site crate in
# a temporary folder, adds an offering, an item type and a page with
# `mantissa generate`, builds it and runs its tests against this checkout,
# then serves it with `mantissa dev` and checks that a change of a Rust
# source rebuilds and restarts it. Prints "ok"/"not ok" per check and a
# closing "new-site: N passed, N failed" line, which .ci/test counts.
#
# Needs target/debug/mantissa (cargo build -p mantissa). The new crate
# builds in target/new-site: a crate outside the workspace resolves its
# dependencies' features differently, so sharing target/debug would rebuild
# them there in turn.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mantissa="${MANTISSA_BIN:-$repo/target/debug/mantissa}"
export CARGO_TARGET_DIR="$repo/target/new-site"
work=$(mktemp -d)
dev_pid=
cleanup() {
    [ -n "$dev_pid" ] && kill -- -"$dev_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "not ok - $name"
        failed=$((failed + 1))
    fi
}
finish() {
    echo "new-site: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit $?
}

site="$work/demo-site"
check "mantissa new writes a crate" "$mantissa" new "$site"
[ -f "$site/Cargo.toml" ] || finish
cd "$site" || finish
check "generate offering" "$mantissa" generate offering recipes
check "generate item" "$mantissa" generate item Comment
check "generate page" "$mantissa" generate page about --offering recipes
check "a second offering of the same name is refused" bash -c "! '$mantissa' generate offering recipes 2>/dev/null"
check "the new crate builds and its tests pass" cargo test --quiet

# mantissa dev: serves, and restarts after a change of a Rust source.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$work/dev.log"
setsid "$mantissa" dev -- --site "$work/site" --listen "127.0.0.1:$port" >"$log" 2>&1 &
dev_pid=$!
up() { # up N: the front page answers within N seconds
    for _ in $(seq "$1"); do
        curl -fs -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 1
    done
    return 1
}
serving() { grep -c "^Serving http://127.0.0.1:$port/" "$log"; }
check "mantissa dev serves the site" up 300
check "its pages render: /private/posts/ asks to log in" \
    bash -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/private/posts/ | grep -q 303"
echo "// changed" >>src/lib.rs
restarted() {
    for _ in $(seq 300); do
        [ "$(serving)" -ge 2 ] && up 30 && return 0
        sleep 1
    done
    return 1
}
check "a changed source rebuilds and restarts it" restarted
if [ "$failed" != 0 ]; then
    echo "# mantissa dev's output:"
    sed 's/^/#   /' "$log"
fi
finish
