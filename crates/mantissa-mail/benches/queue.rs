//! The outbound queue's speed and memory (issue 16, "Speed"): `cargo bench
//! -p mantissa-mail --bench queue`.
//!
//! 1. Resident memory of a process whose site store holds 100,000 queued
//!    messages (`MANTISSA_BENCH_QUEUED`), before and after the queue's
//!    runner has gone through all of them once against a relay that is down
//!    (each deferred): the queue lives in the store, not in memory.
//! 2. Throughput to a local SMTP sink (the testkit's, on loopback) of 5,000
//!    messages (`MANTISSA_BENCH_MAILS`): how fast `send` accepts them (each a
//!    committed write), and how fast the runner delivers them, against the
//!    same messages sent straight over the same number of connections with
//!    no store (what durability costs).

use std::time::{Duration, Instant};

use mantissa_mail::{MailQueue, OutgoingMail, QueueSettings, QueuedMail, SmtpRelay, render};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::SmtpSink;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mail(i: usize) -> OutgoingMail {
    OutgoingMail {
        from: "site@example.org".into(),
        to: vec![format!("user{i}@example.org")],
        subject: format!("Your link, number {i}"),
        text: format!(
            "Hello user{i},\n\nfollow this link to set your password:\n\
             https://example.org/reset/{i:064}\n\nIt works once, for 24 hours.\n"
        ),
        html: None,
        unsubscribe: None,
    }
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn memory(queued: usize) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path().join("site")).unwrap();
    let port = closed_port();
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", port, false),
        QueueSettings::default(),
    );
    let before = vm_rss_kib();
    // Written a thousand to a transaction (what `send` writes, item for
    // item), so that the setup takes seconds, not minutes.
    let start = Instant::now();
    let now = Timestamp::now();
    for chunk in (0..queued).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<QueuedMail> = chunk
            .iter()
            .map(|&i| {
                QueuedMail::new(
                    &mail(i),
                    render(&mail(i)).unwrap(),
                    format!("127.0.0.1:{port}"),
                    now,
                )
                .unwrap()
            })
            .collect();
        site.store()
            .write(move |tx| {
                for item in &items {
                    tx.insert(item)?;
                }
                Ok::<_, mantissa_store::StoreError>(())
            })
            .await
            .unwrap();
    }
    let queued_rss = vm_rss_kib();
    println!(
        "memory: {queued} messages queued in {:.1} s; VmRSS {} KiB before, {} KiB with them queued",
        start.elapsed().as_secs_f64(),
        before,
        queued_rss
    );
    let start = Instant::now();
    let run = queue.run_due(Timestamp::now()).await.unwrap();
    assert_eq!(run.deferred, queued);
    println!(
        "memory: the runner went through all {queued} (relay down: each deferred) in {:.1} s \
         ({:.0} messages/s); VmRSS after: {} KiB",
        start.elapsed().as_secs_f64(),
        queued as f64 / start.elapsed().as_secs_f64(),
        vm_rss_kib()
    );
}

async fn throughput(n: usize) {
    let settings = QueueSettings::default();
    let connections = settings.per_destination;
    // The queue.
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path().join("site")).unwrap();
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", sink.addr.port(), false),
        settings,
    );
    let start = Instant::now();
    for i in 0..n {
        queue.enqueue(mail(i)).await.unwrap();
    }
    let accepted = start.elapsed();
    let start = Instant::now();
    let run = queue.run_due(Timestamp::now()).await.unwrap();
    let delivered = start.elapsed();
    assert_eq!(run.delivered, n);
    assert_eq!(sink.messages().len(), n);
    // The reference: the same messages, straight to a sink over as many
    // connections, nothing stored.
    let reference_sink = SmtpSink::start();
    let port = reference_sink.addr.port();
    let bytes: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let m = mail(i);
            (m.to[0].clone(), render(&m).unwrap())
        })
        .collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..connections {
        let share: Vec<(String, Vec<u8>)> =
            bytes.iter().skip(k).step_by(connections).cloned().collect();
        tasks.spawn(async move {
            let mut c = mail_send::SmtpClientBuilder::new("127.0.0.1".to_string(), port)
                .unwrap()
                .implicit_tls(false)
                .connect_plain()
                .await
                .unwrap();
            // As the queue's connections do.
            c.stream.set_nodelay(true).unwrap();
            for (to, body) in &share {
                c.send(mail_send::smtp::message::Message::new(
                    "site@example.org",
                    [to.as_str()],
                    body.as_slice(),
                ))
                .await
                .unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let direct = start.elapsed();
    assert_eq!(reference_sink.messages().len(), n);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "throughput: {n} messages; send (queued, committed) {:.0} messages/s; \
         delivered by the queue {:.0} messages/s; straight, no store {:.0} messages/s; \
         ratio {:.2}",
        rate(accepted),
        rate(delivered),
        rate(direct),
        direct.as_secs_f64() / delivered.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs benches only to see
    // that they start: a small run then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        memory(if quick {
            1000
        } else {
            env("MANTISSA_BENCH_QUEUED", 100_000)
        })
        .await;
        throughput(if quick {
            200
        } else {
            env("MANTISSA_BENCH_MAILS", 5000)
        })
        .await;
    });
}
