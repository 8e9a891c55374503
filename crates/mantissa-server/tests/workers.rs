//! Connections are served on the connection threads, each connection on one
//! thread for its whole life, each thread having run the server's
//! thread-start hook first, and shutdown still waits for them.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_server::{BoxFuture, Connection, Guard, Limits, Protocol, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Answers every line with the name of the thread that read it.
struct ThreadName;

impl Protocol for ThreadName {
    fn serve(&self, conn: Connection) -> BoxFuture {
        Box::pin(async move {
            let mut lines = BufReader::new(conn.io);
            let mut line = String::new();
            while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                let name = std::thread::current().name().unwrap_or("").to_string();
                if lines
                    .get_mut()
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                line.clear();
            }
        })
    }
}

/// The thread names that answered `n` lines on one connection.
async fn threads_of(stream: &mut BufReader<TcpStream>, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        stream
            .get_mut()
            .write_all(format!("line {i}\n").as_bytes())
            .await
            .unwrap();
        let mut name = String::new();
        stream.read_line(&mut name).await.unwrap();
        names.push(name.trim().to_string());
        // Let the runtimes poll other things between lines.
        tokio::task::yield_now().await;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_stays_on_one_connection_thread_and_shutdown_waits() {
    let mut server = Server::new(Guard::new(Limits::default()));
    let addr = server
        .listen("127.0.0.1:0".parse().unwrap(), None, Arc::new(ThreadName))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mut a = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut b = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let on_a = threads_of(&mut a, 5).await;
    let on_b = threads_of(&mut b, 5).await;
    for names in [&on_a, &on_b] {
        assert!(
            names[0].starts_with("mantissa-conn-"),
            "served on {names:?}, not a connection thread"
        );
        assert!(
            names.iter().all(|n| n == &names[0]),
            "a connection moved between threads: {names:?}"
        );
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert_ne!(
            on_a[0], on_b[0],
            "two connections in a row went to the same thread"
        );
    }

    // Shutdown waits for the open connections (within its grace period,
    // ten seconds by default), and ends the server once they close.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "the server stopped with connections open"
    );
    drop((a, b));
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stopped")
        .unwrap();
}

thread_local! {
    /// The number the thread-start hook was given on this thread.
    static HOOKED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Answers every line with the name of the thread that read it and the
/// number its thread-start hook was given there, if it ran.
struct HookedThread;

impl Protocol for HookedThread {
    fn serve(&self, conn: Connection) -> BoxFuture {
        Box::pin(async move {
            let mut lines = BufReader::new(conn.io);
            let mut line = String::new();
            while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let hooked = HOOKED.get().map_or("none".to_string(), |i| i.to_string());
                let answer = format!("{name} {hooked}\n");
                if lines.get_mut().write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
                line.clear();
            }
        })
    }
}

/// What `mantissa-web`'s `site_server` relies on to give each connection
/// thread its own store reader queue: the hook runs once on every
/// connection thread, with that thread's number, before it serves anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_start_hook_runs_first_on_each_connection_thread() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Arc::new(Mutex::new(Vec::new()));
    let mut server = Server::new(Guard::new(Limits::default()));
    let seen = started.clone();
    server.on_thread_start(move |i| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        seen.lock().unwrap().push((i, name));
        HOOKED.set(Some(i));
    });
    let addr = server
        .listen("127.0.0.1:0".parse().unwrap(), None, Arc::new(HookedThread))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    // Connections are dealt to the threads in turn: as many as there are
    // threads reach every one of them.
    let mut connections = Vec::new();
    for _ in 0..threads {
        let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let answer = threads_of(&mut c, 1).await.remove(0);
        let (name, hooked) = answer.split_once(' ').unwrap();
        assert_eq!(
            Some(hooked),
            name.strip_prefix("mantissa-conn-"),
            "served on {name} with the hook given {hooked}"
        );
        connections.push(c);
    }

    let mut started = started.lock().unwrap().clone();
    started.sort();
    let expected: Vec<(usize, String)> = (0..threads)
        .map(|i| (i, format!("mantissa-conn-{i}")))
        .collect();
    assert_eq!(started, expected, "the hook ran once on each thread");

    stop.send(()).unwrap();
    drop(connections);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stopped")
        .unwrap();
}
