//! VERP return paths and what bounces do (issue 16, items 4 and 7), with
//! real bounces from the parser's samples (crates/mantissa-mail-proto/
//! tests/samples, SOURCES.md says where each came from) coming back to the
//! return paths the relay (the testkit's SMTP sink) was given.

use mantissa_mail::bounces::{self, Effect, TEMPORARY_LIMIT};
use mantissa_mail::{MailQueue, MailState, OutgoingMail, QueueSettings, SmtpRelay, admin};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::SmtpSink;

fn sample(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../mantissa-mail-proto/tests/samples/sisimai/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Setup {
    _dir: tempfile::TempDir,
    site: Site,
    queue: MailQueue,
    sink: SmtpSink,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    let sink = SmtpSink::start();
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", sink.addr.port(), false),
        QueueSettings::default(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    Setup {
        _dir: dir,
        site,
        queue,
        sink,
        rt,
    }
}

impl Setup {
    /// Sends one message to `to` and runs the queue; returns the return
    /// paths the relay was given, one per recipient.
    fn send(&self, to: &[&str]) -> Vec<String> {
        let before = self.sink.messages().len();
        let mail = OutgoingMail {
            from: "Example <site@example.org>".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            subject: "news".into(),
            text: "hello\n".into(),
            html: None,
            unsubscribe: None,
        };
        self.rt.block_on(async {
            self.queue.enqueue(mail).await.unwrap();
            self.queue.run_due(Timestamp::now()).await.unwrap();
        });
        self.sink.messages()[before..]
            .iter()
            .map(|m| m.from.clone())
            .collect()
    }

    fn apply(&self, raw: &[u8], to: Option<&str>) -> Vec<Effect> {
        self.rt
            .block_on(bounces::apply(&self.site, raw, to))
            .unwrap()
    }

    fn states(&self) -> Vec<(String, MailState, Option<String>)> {
        self.rt
            .block_on(admin::list(&self.site, true))
            .unwrap()
            .into_iter()
            .map(|m| (m.recipients.clone(), m.mail_state(), m.last_error.clone()))
            .collect()
    }
}

#[test]
fn each_recipient_has_a_return_path_of_its_own_and_a_permanent_bounce_stops_mail_to_it() {
    let s = setup();
    let paths = s.send(&["kijitora@example.co.jp", "bob@example.net"]);
    assert_eq!(paths.len(), 2, "one copy per recipient");
    // (Copies to one relay go out over parallel connections: any order.)
    let mut verp: Vec<_> = paths
        .iter()
        .map(|p| mantissa_mail_proto::verp::decode(p).expect("a VERP return path"))
        .collect();
    verp.sort_by(|a, b| b.recipient.cmp(&a.recipient));
    let path = |to: &str| {
        paths
            .iter()
            .find(|p| p.contains(&to.replace('@', "=")))
            .unwrap()
    };
    assert_eq!(verp[0].recipient, "kijitora@example.co.jp");
    assert_eq!(verp[1].recipient, "bob@example.net");
    assert_eq!(verp[0].domain, "example.org");
    assert_ne!(verp[0].tag, verp[1].tag);
    assert!(verp[0].tag.len() >= 16, "not guessable: {}", verp[0].tag);
    // Postfix says the user is unknown: the address is failing.
    let effects = s.apply(
        &sample("lhost-postfix-04.eml"),
        Some(path("kijitora@example.co.jp")),
    );
    match &effects[..] {
        [Effect::Failing { address, reason }] => {
            assert_eq!(address, "kijitora@example.co.jp");
            assert!(reason.starts_with("unknown_user"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The next message to it is not sent, and says why; bob's is.
    let sent = s.send(&["KIJITORA@example.co.jp", "bob@example.net"]);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        mantissa_mail_proto::verp::decode(&sent[0])
            .unwrap()
            .recipient,
        "bob@example.net"
    );
    let states = s.states();
    let stopped = states
        .iter()
        .find(|(to, state, _)| to == "KIJITORA@example.co.jp" && *state == MailState::Failed)
        .expect("given up");
    assert!(
        stopped
            .2
            .as_deref()
            .is_some_and(|e| e.contains("not sent: kijitora@example.co.jp is failing")),
        "{stopped:?}"
    );
    // Signing up again with it lifts the mark.
    s.rt.block_on(bounces::forgive(&s.site, "kijitora@example.co.jp"))
        .unwrap();
    assert_eq!(s.send(&["kijitora@example.co.jp"]).len(), 1);
}

#[test]
fn forged_bounces_and_auto_replies_change_nothing() {
    let s = setup();
    let paths = s.send(&["kijitora@example.co.jp"]);
    let real = mantissa_mail_proto::verp::decode(&paths[0]).unwrap();
    let bounce = sample("lhost-postfix-04.eml");
    // A guessed tag, and the right tag with another recipient.
    for forged in [
        mantissa_mail_proto::verp::encode(
            "aaaaaaaaaaaaaaaa",
            "kijitora@example.co.jp",
            "example.org",
        )
        .unwrap(),
        mantissa_mail_proto::verp::encode(&real.tag, "someone@example.co.jp", "example.org")
            .unwrap(),
    ] {
        match &s.apply(&bounce, Some(&forged))[..] {
            [Effect::Ignored { why }] => {
                assert!(why.contains("no message this site sent"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Not back to a return path of the site's at all.
    match &s.apply(&bounce, None)[..] {
        [Effect::Ignored { why }] => assert!(why.contains("no return path"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A vacation message to the real return path: delivered, not a bounce.
    match &s.apply(&sample("rfc3834-01.eml"), Some(&paths[0]))[..] {
        [Effect::Ignored { why }] => assert!(why.contains("automatic reply"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        s.rt.block_on(bounces::failing(&s.site, "kijitora@example.co.jp"))
            .unwrap()
            .is_none()
    );
    assert_eq!(s.send(&["kijitora@example.co.jp"]).len(), 1, "still sent");
}

#[test]
fn temporary_failures_are_counted_until_the_limit_and_a_complaint_stops_mail_at_once() {
    let s = setup();
    let full = sample("lhost-gmail-06.eml");
    for n in 1..=TEMPORARY_LIMIT {
        let path = s.send(&["kijitora@example.jp"]).remove(0);
        let effects = s.apply(&full, Some(&path));
        if n < TEMPORARY_LIMIT {
            assert_eq!(
                effects,
                [Effect::Counted {
                    address: "kijitora@example.jp".into(),
                    temporary: n
                }]
            );
        } else {
            assert!(
                matches!(&effects[..], [Effect::Failing { reason, .. }] if reason.starts_with("mailbox_full")),
                "{effects:?}"
            );
        }
    }
    assert!(s.send(&["kijitora@example.jp"]).is_empty(), "not sent");
    // A complaint (ARF) from the person stops mail to them at once.
    let path = s.send(&["user@example.com"]).remove(0);
    match &s.apply(&sample("arf-12.eml"), Some(&path))[..] {
        [Effect::Failing { address, reason }] => {
            assert_eq!(address, "user@example.com");
            assert!(reason.starts_with("complaint"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.send(&["user@example.com"]).is_empty(), "not sent");
}

/// Told when an address starts failing (an application's powerup).
#[derive(mantissa_store::Item)]
#[item(name = "test.bounce_flagger", version = 1)]
struct Flagger {
    fail: bool,
}

#[derive(mantissa_store::Item, Debug)]
#[item(name = "test.flagged", version = 1)]
struct Flagged {
    address: String,
}

impl bounces::BounceListener for Flagger {
    fn address_failing(
        &self,
        tx: &mut mantissa_store::Write<'_>,
        address: &bounces::FailingAddress,
    ) -> Result<(), mantissa_store::StoreError> {
        if self.fail {
            panic!("a listener's bug");
        }
        tx.insert(&Flagged {
            address: address.address.clone(),
        })
        .map(drop)
    }
}
mantissa_store::powerup!(Flagger as dyn bounces::BounceListener);

#[test]
fn applications_are_told_once_when_an_address_starts_failing() {
    let s = setup();
    s.site
        .store()
        .write_blocking(|tx| {
            // One with a bug, tried first: the other is still told.
            let bad = tx.insert(&Flagger { fail: true })?;
            tx.install_powerup::<dyn bounces::BounceListener, _>(bad, 20)?;
            let good = tx.insert(&Flagger { fail: false })?;
            tx.install_powerup::<dyn bounces::BounceListener, _>(good, 10)
        })
        .unwrap();
    let bounce = sample("lhost-postfix-04.eml");
    for _ in 0..2 {
        let path = s.send(&["kijitora@example.co.jp"]);
        // The second message is not sent (the address is failing): the
        // bounce of the first comes back again.
        let path = path.first().cloned();
        if let Some(path) = path {
            s.apply(&bounce, Some(&path));
            s.apply(&bounce, Some(&path));
        }
    }
    let flagged: Vec<String> = s
        .site
        .store()
        .read_blocking(|r| r.query::<Flagged>().all())
        .unwrap()
        .into_iter()
        .map(|f| f.address.clone())
        .collect();
    assert_eq!(flagged, ["kijitora@example.co.jp"], "told once");
}
