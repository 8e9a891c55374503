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
