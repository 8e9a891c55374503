//! Slow and hostile clients cannot hold the server: slowloris connections
//! are cut at the header timeout and capped per address, while a normal
//! visitor's page still loads promptly.

use std::time::{Duration, Instant};

use mantissa_server::Limits;
use mantissa_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn routes() -> axum::Router<mantissa_web::App> {
    axum::Router::new()
}

async fn connect_from(source: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{source}:0").parse().unwrap())?;
    sock.connect(to).await
}

#[test]
fn slowloris_does_not_starve_other_visitors() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                header_timeout: Duration::from_secs(2),
                max_connections_per_ip: 64,
                ..Limits::default()
            },
            ..Setup::default()
        },
        routes,
    );
    let addr = s.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // 400 slow connections from one address, each sending a header line
        // every 500 ms and never finishing (bounded: 4 s in all).
        let mut attackers = Vec::new();
        for i in 0..400 {
            attackers.push(tokio::spawn(async move {
                let Ok(mut c) = connect_from("127.0.0.1", addr).await else {
                    return (false, Duration::ZERO);
                };
                let start = Instant::now();
                if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                    return (false, start.elapsed());
                }
                let mut buf = [0u8; 1024];
                for n in 0..8 {
                    tokio::select! {
                        r = c.read(&mut buf) => {
                            // The server answered (408, 503) or closed.
                            let _ = r;
                            return (true, start.elapsed());
                        }
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    if c.write_all(format!("X-Slow-{i}-{n}: 1\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return (true, start.elapsed());
                    }
                }
                (false, start.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        // A visitor from another address loads the front page promptly.
        let start = Instant::now();
        let mut c = connect_from("127.0.0.2", addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut page = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut page))
            .await
            .expect("the page loads")
            .unwrap();
        let took = start.elapsed();
        let r = parse(&page);
        assert_eq!(r.status, 200);
        assert!(took < Duration::from_secs(1), "the page took {took:?}");

        let mut cut = 0;
        for a in attackers {
            let (closed, after) = a.await.unwrap();
            if closed {
                cut += 1;
                assert!(after < Duration::from_secs(4), "held for {after:?}");
            }
        }
        assert_eq!(cut, 400, "every slow connection was refused or timed out");
    });
}

/// A server with `limits`, and a runtime on this thread for its clients.
fn server_and_clients(
    limits: Limits,
    extra: fn() -> axum::Router<mantissa_web::App>,
) -> (TestServer, tokio::runtime::Runtime) {
    let s = TestServer::start(
        Setup {
            limits,
            ..Setup::default()
        },
        extra,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (s, rt)
}

/// Asks `/healthz` on `c` (keep-alive) and checks the answer is a 200.
async fn ask(c: &mut TcpStream, since: Instant) {
    let mut buf = [0u8; 4096];
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "answered, and the connection kept ({:?} in)",
        since.elapsed()
    );
}

/// Checks that the server has closed `c`: reading gives end of stream
/// at once.
async fn assert_closed(c: &mut TcpStream, name: &str) {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("the {name} connection is still open"))
        .unwrap_or(0);
    assert_eq!(n, 0, "the {name} connection was closed");
}

/// A keep-alive connection nobody uses is closed after the idle timeout,
/// while one that keeps asking stays open past it.
#[test]
fn quiet_connections_are_closed_and_busy_ones_kept() {
    let (s, rt) = server_and_clients(
        Limits {
            idle_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        routes,
    );
    let addr = s.addr;
    rt.block_on(async move {
        let start = Instant::now();
        let mut quiet = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        ask(&mut quiet, start).await;
        ask(&mut busy, start).await;
        // The busy one asks every 500 ms for 4.5 s (over twice the idle
        // timeout); the quiet one says nothing.
        while start.elapsed() < Duration::from_millis(4500) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            ask(&mut busy, start).await;
        }
        assert_closed(&mut quiet, "quiet").await;
    });
}

/// A page whose body comes slowly: ten pieces, 250 ms apart.
async fn slow_download() -> axum::body::Body {
    let pieces = futures_util::stream::unfold(0u32, |n| async move {
        if n == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from(format!("piece {n}\n"))),
            n + 1,
        ))
    });
    axum::body::Body::from_stream(pieces)
}

fn slow_routes() -> axum::Router<mantissa_web::App> {
    axum::Router::new().route("/slow-download", axum::routing::get(slow_download))
}

/// The header timeout bounds waiting for a request's head, and only that:
/// a connection that says nothing, or nothing more after an answer, is cut
/// once it has passed; one that keeps asking, or is slowly being sent a
/// long answer, is not.
#[test]
fn the_header_timeout_cuts_waiting_for_a_head_and_nothing_else() {
    let (s, rt) = server_and_clients(
        Limits {
            header_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        slow_routes,
    );
    let addr = s.addr;
    rt.block_on(async move {
        let start = Instant::now();
        // Silent from the start.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Silent after one answer (keep-alive).
        let mut done = TcpStream::connect(addr).await.unwrap();
        ask(&mut done, start).await;
        // Half a head, never finished.
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // A long answer, sent slowly over 2.5 s.
        let mut download = TcpStream::connect(addr).await.unwrap();
        download
            .write_all(b"GET /slow-download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let downloading = tokio::spawn(async move {
            let mut all = Vec::new();
            download.read_to_end(&mut all).await.unwrap();
            String::from_utf8_lossy(&all).into_owned()
        });
        // Asking every 300 ms for 2.5 s.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        while start.elapsed() < Duration::from_millis(2500) {
            ask(&mut busy, start).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // By now (2.5 s; the timeout is 1 s, looked at every 250 ms) the
        // waiting ones are closed.
        assert_closed(&mut silent, "silent").await;
        assert_closed(&mut done, "silent-after-an-answer").await;
        assert_closed(&mut half, "half-a-head").await;
        let page = downloading.await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains("piece 0\n") && page.contains("piece 9\n"),
            "{page}"
        );
    });
}

/// Loads the front page from `source` on a fresh connection: its status
/// and how long it took.
async fn visit(source: &str, addr: std::net::SocketAddr) -> (u16, Duration) {
    let start = Instant::now();
    let load = async {
        let mut c = connect_from(source, addr).await.ok()?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut page = Vec::new();
        c.read_to_end(&mut page).await.ok()?;
        Some(parse(&page).status)
    };
    let status = tokio::time::timeout(Duration::from_secs(5), load)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    (status, start.elapsed())
}

/// A visitor loads the front page five times while an attack goes on:
/// every load is a 200 within a second.
async fn visitor_is_served(addr: std::net::SocketAddr, during: &str) {
    for _ in 0..5 {
        let (status, took) = visit("127.0.0.250", addr).await;
        assert_eq!(status, 200, "a visitor's page during {during}");
        assert!(
            took < Duration::from_secs(1),
            "took {took:?} during {during}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CSRF token an attacker made up: any well-formed one passes the
/// double-submit check when the cookie and the form agree.
const CSRF: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

/// Limits small enough that a test-sized attack would use up the site's
/// request permits if slow bodies held them.
fn small_site() -> Limits {
    Limits {
        max_in_flight: 16,
        body_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}

/// The body of a POST trickled a byte every 300 ms (fast enough for any
/// timeout between bytes) is cut at the body deadline, and while 160 such
/// bodies from 20 addresses are arriving — ten times the site's request
/// permits — visitors are served within a second.
#[test]
fn slow_bodies_from_many_addresses_do_not_take_the_sites_permits() {
    let (s, rt) = server_and_clients(small_site(), routes);
    let addr = s.addr;
    rt.block_on(async move {
        let mut attackers = Vec::new();
        for i in 0..160 {
            let source = format!("127.0.3.{}", 1 + i % 20);
            attackers.push(tokio::spawn(async move {
                let mut c = connect_from(&source, addr).await.unwrap();
                let start = Instant::now();
                // With a CSRF cookie of its own making, so that the form's
                // token must be read from the body to check it.
                c.write_all(
                    format!(
                        "POST /anything HTTP/1.1\r\nHost: x\r\nCookie: mantissa_csrf={CSRF}\r\n\
                         Content-Type: application/x-www-form-urlencoded\r\n\
                         Content-Length: 100\r\n\r\ncsrf_token={CSRF}&text="
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
                let mut buf = vec![0u8; 8192];
                // At most 8 s (30 bytes): the body is never finished.
                for _ in 0..30 {
                    tokio::select! {
                        r = c.read(&mut buf) => {
                            let n = r.unwrap_or(0);
                            return (String::from_utf8_lossy(&buf[..n]).into_owned(), start.elapsed());
                        }
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    }
                    if c.write_all(b"a").await.is_err() {
                        break;
                    }
                }
                (String::new(), start.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        visitor_is_served(addr, "160 slow bodies").await;

        let (mut timed_out, mut refused) = (0, 0);
        for a in attackers {
            let (answer, after) = a.await.unwrap();
            if answer.starts_with("HTTP/1.1 408") {
                timed_out += 1;
                assert!(
                    after < Duration::from_secs(5),
                    "a trickled body was cut after {after:?}"
                );
                assert!(answer.contains("did not arrive within 3 seconds"), "{answer}");
            } else if answer.starts_with("HTTP/1.1 429") {
                refused += 1;
            } else {
                panic!("a slow body was answered {answer:?} after {after:?}");
            }
        }
        // Eight bodies may arrive at once from an address (the default).
        assert_eq!(timed_out, 160, "{refused} refused at once");
    });
}

/// Over HTTP/2 (prior-knowledge h2c on a plain port), one address opening
/// 4 connections × 64 streams whose bodies never finish gets no more than
/// its address's share, and visitors are served within a second.
#[test]
fn http2_streams_from_one_address_do_not_take_the_sites_permits() {
    let (s, rt) = server_and_clients(small_site(), routes);
    let addr = s.addr;
    rt.block_on(async move {
        let mut connections = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..4 {
            let tcp = connect_from("127.0.4.1", addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            connections.push(tokio::spawn(connection));
            let mut client = client.ready().await.unwrap();
            for _ in 0..64 {
                let request = ::http::Request::post(format!("http://{addr}/anything"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("cookie", format!("mantissa_csrf={CSRF}"))
                    .body(())
                    .unwrap();
                let Ok((response, mut body)) = client.send_request(request, false) else {
                    break;
                };
                let _ = body.send_data(
                    bytes::Bytes::from(format!("csrf_token={CSRF}&text=")),
                    false,
                );
                streams.push((response, body));
                client = client.ready().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        visitor_is_served(addr, "256 HTTP/2 streams with slow bodies").await;

        // The streams beyond the address's share were answered at once;
        // the rest by the body deadline.
        let mut statuses = std::collections::BTreeMap::new();
        for (response, _body) in streams {
            let status = tokio::time::timeout(Duration::from_secs(6), response)
                .await
                .expect("every stream is answered by the body deadline")
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            *statuses.entry(status).or_insert(0) += 1;
        }
        assert_eq!(statuses.get(&408), Some(&8), "{statuses:?}");
        assert_eq!(statuses.get(&429), Some(&248), "{statuses:?}");
    });
}

/// One slowloris connection from `source`, for `seconds`: a request line,
/// then a header line every 500 ms, never finishing; opened again whenever
/// the server closes it. Says how many times it was closed.
async fn slowloris(source: String, addr: std::net::SocketAddr, seconds: u64) -> usize {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut closed = 0;
    while Instant::now() < stop {
        let Ok(mut c) = connect_from(&source, addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
            closed += 1;
            continue;
        }
        let mut buf = [0u8; 1024];
        while Instant::now() < stop {
            tokio::select! {
                _ = c.read(&mut buf) => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if c.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
        closed += 1;
    }
    closed
}

/// A slowloris from 40 addresses, each under its address's cap but all
/// together twice the server's connection cap: when the slots run out,
/// the connections that have waited longest for a request head make room,
/// and every visitor's page loads within a second.
#[test]
fn a_slowloris_from_many_addresses_beyond_the_connection_cap_makes_room_for_visitors() {
    let (s, rt) = server_and_clients(
        Limits {
            max_connections: 300,
            ..Limits::default()
        },
        routes,
    );
    let addr = s.addr;
    rt.block_on(async move {
        let attack: Vec<_> = (0..600)
            .map(|i| {
                let source = format!("127.0.7.{}", 1 + i % 40);
                tokio::spawn(slowloris(source, addr, 6))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..3 {
            visitor_is_served(addr, "600 slowloris connections from 40 addresses").await;
        }
        let mut pushed_out = 0;
        for a in attack {
            pushed_out += a.await.unwrap();
        }
        assert!(
            pushed_out >= 300,
            "only {pushed_out} slow connections were closed"
        );
    });
}

/// A flood of connections from one address, far over its cap, held open and
/// made anew as fast as they are refused, costs others nothing: fifty
/// fresh connections from another address each get their page within a
/// second (a connection that finds the listen queue full loses its SYN and
/// waits a second for the next).
#[test]
fn a_connection_flood_from_one_address_does_not_delay_others() {
    let (s, rt) = server_and_clients(Limits::default(), routes);
    let addr = s.addr;
    rt.block_on(async move {
        let stop = Instant::now() + Duration::from_secs(4);
        let flood: Vec<_> = (0..256)
            .map(|_| {
                tokio::spawn(async move {
                    let mut kept = Vec::new();
                    while Instant::now() < stop {
                        match connect_from("127.0.8.1", addr).await {
                            Ok(c) => kept.push(c),
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                        if kept.len() > 4 {
                            kept.remove(0);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..50 {
            let (status, took) = visit("127.0.8.2", addr).await;
            assert_eq!(status, 200, "a visitor's page during the flood");
            slowest = slowest.max(took);
        }
        assert!(
            slowest < Duration::from_secs(1),
            "the slowest page took {slowest:?}"
        );
        for f in flood {
            f.await.unwrap();
        }
    });
}
