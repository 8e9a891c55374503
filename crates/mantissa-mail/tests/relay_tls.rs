//! The queue's connection to its relay: TLS by STARTTLS when the relay
//! offers it, the relay's certificate checked, and a password never sent
//! in the clear but to this machine. The relay with STARTTLS is Mantissa's own submission port
//! (inbound.rs) on loopback, with a certificate of its own.

use std::sync::{Arc, Mutex};

use mantissa_mail::inbound::{
    DestinationFuture, LoginFuture, Recipients, SmtpLimits, SmtpProtocol, Submission, SubmitFuture,
};
use mantissa_mail::{MailQueue, MailState, OutgoingMail, QueueSettings, SmtpRelay, admin};
use mantissa_server::{Guard, Limits, Server, load_tls};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::SmtpSink;

struct Nobody;

impl Recipients for Nobody {
    fn destination(&self, _: &str) -> DestinationFuture {
        Box::pin(async { None })
    }
}

/// A relay account `relay` / `secret`; keeps what it is given.
#[derive(Default)]
struct Relay {
    got: Mutex<Vec<(String, Vec<String>, String)>>,
}

impl Submission for Relay {
    fn login(&self, _: std::net::IpAddr, who: &str, password: &str) -> LoginFuture {
        let ok = who == "relay" && password == "secret";
        Box::pin(async move { ok.then(|| "relay".to_string()) })
    }

    fn submit(&self, user: &str, from: &str, to: Vec<String>, raw: Arc<Vec<u8>>) -> SubmitFuture {
        assert_eq!(user, "relay");
        self.got.lock().unwrap().push((
            from.to_string(),
            to,
            String::from_utf8_lossy(&raw).into_owned(),
        ));
        Box::pin(async { Ok(()) })
    }
}

fn mail() -> OutgoingMail {
    OutgoingMail {
        from: "site@example.org".into(),
        to: vec!["ann@example.net".into()],
        subject: "over TLS".into(),
        text: "hello\n".into(),
        html: None,
        unsubscribe: None,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    site: Site,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Setup {
        _dir: dir,
        site,
        rt,
    }
}

impl Setup {
    /// Sends one message through `relay`; its state and last error.
    fn send_through(&self, relay: SmtpRelay) -> (MailState, Option<String>) {
        let queue = MailQueue::new(self.site.clone(), relay, QueueSettings::default());
        self.rt.block_on(async {
            queue.enqueue(mail()).await.unwrap();
            queue.run_due(Timestamp::now()).await.unwrap();
        });
        let m = self
            .rt
            .block_on(admin::list(&self.site, true))
            .unwrap()
            .pop()
            .unwrap();
        (m.mail_state(), m.last_error.clone())
    }

    /// A submission port offering STARTTLS with a new certificate for
    /// `localhost`; its port, the certificate, and what it was given.
    fn tls_relay(&self) -> (u16, rcgen::CertifiedKey<rcgen::KeyPair>, Arc<Relay>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (c, k) = (
            self._dir.path().join("c.pem"),
            self._dir.path().join("k.pem"),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let relay = Arc::new(Relay::default());
        let protocol = SmtpProtocol::new(
            self.site.clone(),
            "relay.example",
            SmtpLimits::default(),
            Arc::new(Nobody),
        )
        .with_starttls(load_tls(&c, &k).unwrap())
        .submission(relay.clone());
        let port = self.rt.block_on(async {
            let mut server = Server::new(Guard::new(Limits::default()));
            let addr = server
                .listen("127.0.0.1:0".parse().unwrap(), None, Arc::new(protocol))
                .await
                .unwrap();
            tokio::spawn(server.run(std::future::pending()));
            addr.port()
        });
        (port, cert, relay)
    }
}

#[test]
fn mail_goes_to_a_relay_over_starttls_and_logs_in_there() {
    let s = setup();
    let (port, cert, relay) = s.tls_relay();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let to = SmtpRelay::new("localhost", port, false)
        .with_credentials("relay", "secret")
        .trusting(roots)
        .unwrap();
    let (state, error) = s.send_through(to);
    assert_eq!(state, MailState::Delivered, "{error:?}");
    let got = relay.got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, ["ann@example.net"]);
    assert!(
        got[0].0.starts_with("bounces+"),
        "the return path: {}",
        got[0].0
    );
    assert!(got[0].2.contains("Subject: over TLS"), "{}", got[0].2);
}

#[test]
fn a_relay_whose_certificate_is_not_trusted_gets_nothing() {
    let s = setup();
    let (port, _, relay) = s.tls_relay();
    let to = SmtpRelay::new("localhost", port, false).with_credentials("relay", "secret");
    let (state, error) = s.send_through(to);
    assert_eq!(state, MailState::Queued, "deferred: {error:?}");
    let error = error.unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(relay.got.lock().unwrap().is_empty());
}

#[test]
fn a_relay_on_this_machine_without_tls_still_gets_the_password() {
    // Elsewhere it would not (lib.rs: only_this_machine_may_get_a_password_in_the_clear);
    // the testkit's sink offers no STARTTLS, and is on 127.0.0.1.
    let s = setup();
    let sink = SmtpSink::start();
    let to = SmtpRelay::new("127.0.0.1", sink.addr.port(), false).with_credentials("u", "p");
    let (state, error) = s.send_through(to);
    assert_eq!(state, MailState::Delivered, "{error:?}");
    assert_eq!(sink.messages().len(), 1);
}
