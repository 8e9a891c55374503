//! Mutated requests, thousands of them, against a real server: each gets an
//! HTTP answer (or a closed connection), never a 500 (a caught panic), and
//! the server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mantissa_server::Limits;
use mantissa_testkit::*;

const SEEDS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /api/?a=1&b=%zz HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, br\r\n\r\n",
    "POST /test/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\nCookie: mantissa_csrf=abc\r\n\r\ncsrf_token=ab",
    "GET /static/mantissa/0123456789abcdef/mantissa.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\n\r\n",
    "GET /users/alice/some-slug/rest?x=y HTTP/1.1\r\nHost: x\r\nCookie: mantissa_session=zzz\r\n\r\n",
    "HEAD /robots.txt HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT\r\nUser-Agent: Googlebot\r\n\r\n",
    "POST /api/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nOrigin: http://x\r\nSec-Fetch-Site: same-origin\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.usize(1..6) {
        if b.is_empty() {
            b.push(rng.u8(..));
            continue;
        }
        let i = rng.usize(..b.len());
        match rng.u8(..8) {
            0 => b[i] = rng.u8(..),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, rng.u8(..)),
            3 => {
                let j = rng.usize(i..b.len());
                let chunk = b[i..j].to_vec();
                drop(b.splice(i..i, chunk));
            }
            4 => b.insert(i, b"\r\n"[rng.usize(..2)]),
            5 => {
                let junk: Vec<u8> = std::iter::repeat_n(b'A', rng.usize(..9000)).collect();
                drop(b.splice(i..i, junk));
            }
            6 => b.truncate(i),
            _ => {
                drop(b.splice(i..i, b"%00%ff\xff\xfe<script>".iter().copied()));
            }
        }
    }
    b
}

#[test]
fn mutated_requests_never_break_the_server() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                requests_per_second_per_ip: 1_000_000,
                request_burst_per_ip: 1_000_000,
                header_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            ..Setup::default()
        },
        || axum::Router::new().route("/test/form", axum::routing::post(|| async { "posted" })),
    );
    let mut rng = fastrand::Rng::with_seed(0x4d616e74);
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..1500 {
        let seed = SEEDS[n % SEEDS.len()].as_bytes();
        let req = mutate(&mut rng, seed);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&req);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        if out.is_empty() {
            *statuses.entry(0).or_insert(0) += 1;
            continue;
        }
        let head = String::from_utf8_lossy(&out[..out.len().min(64)]).into_owned();
        assert!(head.starts_with("HTTP/1."), "request {req:?} got {head:?}");
        let status: u16 = head[9..12].parse().unwrap();
        assert_ne!(
            status,
            500,
            "request {:?} made the server fail",
            String::from_utf8_lossy(&req)
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.len() > 3,
        "the mutations reached several outcomes: {statuses:?}"
    );
    assert_eq!(s.get("/").status, 200, "and the server still serves");
}
