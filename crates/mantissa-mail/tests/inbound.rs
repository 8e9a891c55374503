//! The inbound SMTP server on the connection host, talked to over loopback
//! as a sending server would: bounces to the site's return paths are
//! processed, oversized messages refused after their data, a slow client
//! closed by the head watch, and malformed dialogues (random bytes, long
//! lines, commands out of order) answered with errors, never a panic, and
//! the server still serving after them.

use std::sync::Arc;
use std::time::Duration;

use mantissa_mail::bounces;
use mantissa_mail::inbound::{
    Destination, DestinationFuture, InboundMail, Recipients, SmtpLimits, SmtpProtocol,
};
use mantissa_mail::{MailQueue, OutgoingMail, QueueSettings, SmtpRelay};
use mantissa_server::{Guard, Limits, Server};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::SmtpSink;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// ann@example.org is ann's; the site's return paths go to the bounces.
struct Ann;

impl Recipients for Ann {
    fn destination(&self, address: &str) -> DestinationFuture {
        let address = address.to_ascii_lowercase();
        Box::pin(async move {
            if mantissa_mail_proto::verp::decode(&address).is_some() {
                Some(Destination::Bounces)
            } else if address == "ann@example.org" {
                Some(Destination::User("ann".into()))
            } else {
                None
            }
        })
    }
}

struct Running {
    _dir: tempfile::TempDir,
    site: Site,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(limits: Limits, smtp: SmtpLimits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site");
    let site = tokio::task::spawn_blocking(move || {
        let site = mantissa_store::testing::open_site(&path).unwrap();
        site.user_store("ann").unwrap();
        site
    })
    .await
    .unwrap();
    let mut server = Server::new(Guard::new(limits));
    let protocol = SmtpProtocol::new(site.clone(), "mx.example.org", smtp, Arc::new(Ann));
    let addr = server
        .listen("127.0.0.1:0".parse().unwrap(), None, Arc::new(protocol))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        _dir: dir,
        site,
        addr,
        stop: Some(stop),
    }
}

/// A client that sends lines and reads whole replies.
struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> (Client, String) {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// One reply, all its lines; empty when the server closed.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes).await;
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_sent_to_a_return_path_over_smtp_marks_the_address_failing() {
    let s = start(Limits::default(), SmtpLimits::default()).await;
    // Mail the site sent: its return path, from the relay's side.
    let sink = SmtpSink::start();
    let queue = MailQueue::new(
        s.site.clone(),
        SmtpRelay::new("127.0.0.1", sink.addr.port(), false),
        QueueSettings::default(),
    );
    queue
        .enqueue(OutgoingMail {
            from: "site@example.org".into(),
            to: vec!["kijitora@example.co.jp".into()],
            subject: "news".into(),
            text: "hello\n".into(),
            html: None,
            unsubscribe: None,
        })
        .await
        .unwrap();
    queue.run_due(Timestamp::now()).await.unwrap();
    let path = tokio::task::spawn_blocking(move || sink.wait_for(1)[0].from.clone())
        .await
        .unwrap();
    // Postfix's bounce comes back to it.
    let bounce = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mantissa-mail-proto/tests/samples/sisimai/lhost-postfix-04.eml"
    ))
    .unwrap();
    let (mut c, greeting) = Client::connect(s.addr).await;
    assert_eq!(code(&greeting), "220", "{greeting}");
    assert_eq!(code(&c.command("EHLO mx.example.co.jp").await), "250");
    assert_eq!(code(&c.command("MAIL FROM:<>").await), "250");
    assert_eq!(code(&c.command(&format!("RCPT TO:<{path}>")).await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    let mut data = Vec::new();
    for line in bounce.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    assert_eq!(code(&c.reply().await), "250");
    let failing = bounces::failing(&s.site, "kijitora@example.co.jp")
        .await
        .unwrap()
        .expect("marked");
    assert!(
        failing.failing && failing.reason.starts_with("unknown_user"),
        "{failing:?}"
    );
    assert_eq!(code(&c.command("QUIT").await), "221");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused_and_nothing_is_stored() {
    let smtp = SmtpLimits {
        max_message_bytes: 10_000,
        ..SmtpLimits::default()
    };
    let s = start(Limits::default(), smtp).await;
    let (mut c, _) = Client::connect(s.addr).await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.contains("250-SIZE 10000"), "{ehlo}");
    // Said up front: refused at once.
    assert_eq!(
        code(&c.command("MAIL FROM:<b@example.net> SIZE=20000").await),
        "552"
    );
    assert_eq!(code(&c.command("MAIL FROM:<b@example.net>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<ann@example.org>").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    let body = "x".repeat(998) + "\r\n";
    let mut data = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..30 {
        data.extend_from_slice(body.as_bytes());
    }
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    assert_eq!(code(&c.reply().await), "552");
    // The session goes on: a small one is accepted.
    assert_eq!(code(&c.command("MAIL FROM:<b@example.net>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<ann@example.org>").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    c.send(b"Subject: small\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    let site = s.site.clone();
    let subjects = tokio::task::spawn_blocking(move || {
        site.user_store("ann")
            .unwrap()
            .read_blocking(|r| r.query::<InboundMail>().all())
            .unwrap()
            .into_iter()
            .map(|m| m.subject.clone())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(subjects, ["small"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dialogues_get_errors_and_the_server_keeps_serving() {
    let s = start(Limits::default(), SmtpLimits::default()).await;
    let (mut c, _) = Client::connect(s.addr).await;
    // Out of order.
    assert_eq!(code(&c.command("MAIL FROM:<a@example.net>").await), "503");
    assert_eq!(code(&c.command("EHLO x").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<ann@example.org>").await), "503");
    assert_eq!(code(&c.command("DATA").await), "503");
    assert_eq!(code(&c.command("FROBNICATE").await), "500");
    assert_eq!(code(&c.command("MAIL FROM:<<<>").await), "501");
    // A line longer than the limit.
    let long = format!("NOOP {}", "a".repeat(10_000));
    assert_eq!(code(&c.command(&long).await), "500");
    assert_eq!(code(&c.command("NOOP").await), "250");
    // Random bytes on many connections: answered or closed, no panic.
    let mut rng = 7u64;
    for _ in 0..20 {
        let (mut c, _) = Client::connect(s.addr).await;
        let mut junk = Vec::new();
        for _ in 0..2000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            junk.push((rng >> 56) as u8);
        }
        c.send(&junk).await;
        c.send(b"\r\nQUIT\r\n").await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.r.read_to_end(&mut rest)).await;
    }
    // Still serving.
    let (mut c, greeting) = Client::connect(s.addr).await;
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.command("EHLO x").await), "250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_a_command_is_closed_by_the_head_watch() {
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let s = start(limits, SmtpLimits::default()).await;
    let (mut c, _) = Client::connect(s.addr).await;
    assert_eq!(code(&c.command("EHLO x").await), "250");
    // A byte every 300 ms, never a whole line.
    let started = std::time::Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        c.send(b"N").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(10), c.r.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Files each message's subject (an application's powerup on ann's store).
#[derive(mantissa_store::Item)]
#[item(name = "test.filer", version = 1)]
struct Filer {
    fail: bool,
}

#[derive(mantissa_store::Item, Debug)]
#[item(name = "test.filed", version = 1)]
struct Filed {
    subject: String,
}

impl mantissa_mail::inbound::MailHandler for Filer {
    fn received(
        &self,
        tx: &mut mantissa_store::Write<'_>,
        mail: &mantissa_store::Stored<InboundMail>,
    ) -> Result<(), mantissa_store::StoreError> {
        if self.fail {
            panic!("a handler's bug");
        }
        tx.insert(&Filed {
            subject: mail.subject.clone(),
        })
        .map(drop)
    }
}
mantissa_store::powerup!(Filer as dyn mantissa_mail::inbound::MailHandler);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_handed_to_the_handlers_installed_on_the_person_s_store() {
    let s = start(Limits::default(), SmtpLimits::default()).await;
    let site = s.site.clone();
    tokio::task::spawn_blocking(move || {
        site.user_store("ann")
            .unwrap()
            .write_blocking(|tx| {
                let bad = tx.insert(&Filer { fail: true })?;
                tx.install_powerup::<dyn mantissa_mail::inbound::MailHandler, _>(bad, 20)?;
                let good = tx.insert(&Filer { fail: false })?;
                tx.install_powerup::<dyn mantissa_mail::inbound::MailHandler, _>(good, 10)
            })
            .unwrap()
    })
    .await
    .unwrap();
    let (mut c, _) = Client::connect(s.addr).await;
    assert_eq!(code(&c.command("EHLO x").await), "250");
    assert_eq!(code(&c.command("MAIL FROM:<b@example.net>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<ann@example.org>").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    c.send(b"Subject: Minutes\r\n\r\nattached\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    let site = s.site.clone();
    let (mail, filed) = tokio::task::spawn_blocking(move || {
        site.user_store("ann")
            .unwrap()
            .read_blocking(|r| {
                Ok::<_, mantissa_store::StoreError>((
                    r.query::<InboundMail>().all()?.len(),
                    r.query::<Filed>()
                        .all()?
                        .into_iter()
                        .map(|f| f.subject.clone())
                        .collect::<Vec<_>>(),
                ))
            })
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(mail, 1, "delivered, whatever the handlers did");
    assert_eq!(filed, ["Minutes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_server_found_of_the_sender_is_recorded_on_the_message() {
    let s = start(Limits::default(), SmtpLimits::default()).await;
    // Signed by a key nobody published: a signature found, not verified.
    let key = mantissa_mail::DkimKey::generate("example.net", "s1").unwrap();
    let signed = key
        .sign(b"From: bob@example.net\r\nTo: ann@example.org\r\nSubject: signed\r\n\r\nhello\r\n")
        .unwrap();
    let (mut c, _) = Client::connect(s.addr).await;
    assert_eq!(code(&c.command("EHLO mail.example.net").await), "250");
    assert_eq!(code(&c.command("MAIL FROM:<bob@example.net>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<ann@example.org>").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    let mut data = signed.clone();
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    assert_eq!(code(&c.reply().await), "250");
    let site = s.site.clone();
    let (mail, raw) = tokio::task::spawn_blocking(move || {
        site.user_store("ann")
            .unwrap()
            .read_blocking(|r| {
                let m = r.query::<InboundMail>().first()?.expect("delivered");
                let raw = r.file(m.id(), mantissa_mail::inbound::RAW_FILE)?.unwrap();
                Ok::<_, mantissa_store::StoreError>((m.into_inner(), raw))
            })
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        ["fail", "temperror", "permerror", "neutral"].contains(&mail.dkim.as_str()),
        "a signature found and not verified: {mail:?}"
    );
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.starts_with("Authentication-Results: mx.example.org;"),
        "{raw}"
    );
    assert!(raw.contains("dkim="), "{raw}");
    assert!(
        raw.ends_with(std::str::from_utf8(&signed).unwrap()),
        "the message as it came"
    );
}
