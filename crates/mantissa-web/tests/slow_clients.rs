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

/// A keep-alive connection nobody uses is closed after the idle timeout,
/// while one that keeps asking stays open past it.
#[test]
fn quiet_connections_are_closed_and_busy_ones_kept() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                idle_timeout: Duration::from_secs(2),
                ..Limits::default()
            },
            ..Setup::default()
        },
        routes,
    );
    let addr = s.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut quiet = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 4096];
        for c in [&mut quiet, &mut busy] {
            c.write_all(ask).await.unwrap();
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered");
        }
        // The busy one asks every 500 ms for 4.5 s (over twice the idle
        // timeout); the quiet one says nothing.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(4500) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.write_all(ask).await.unwrap();
            let n = busy.read(&mut buf).await.unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "a busy connection is kept (after {:?})",
                start.elapsed()
            );
        }
        // The quiet one was closed: reading gives end of stream at once.
        let n = tokio::time::timeout(Duration::from_secs(1), quiet.read(&mut buf))
            .await
            .expect("closed, not still open")
            .unwrap_or(0);
        assert_eq!(n, 0, "the quiet connection was closed");
    });
}
