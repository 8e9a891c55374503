//! DKIM signing (issue 16, item 4), checked as a receiver checks it: by
//! dkimpy, against the DNS record `mantissa mail dkim generate` prints,
//! on the bytes that reach a real SMTP peer (the testkit's sink) and those
//! written to the development outbox.

use mantissa_mail::{DkimKey, MailQueue, Mailer, Outbox, OutgoingMail, QueueSettings, SmtpRelay};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::{SmtpSink, dkim_verifies};

fn mail(from: &str, subject: &str) -> OutgoingMail {
    OutgoingMail {
        from: from.into(),
        to: vec!["ann@example.net".into()],
        subject: subject.into(),
        text: format!("Your link:\n\nhttps://example.org/{subject}\n"),
        html: None,
        unsubscribe: None,
    }
}

fn site_with_key(dir: &std::path::Path) -> (Site, DkimKey) {
    let site = mantissa_store::testing::open_site(&dir.join("site")).unwrap();
    let key = DkimKey::generate("Example.org", "s1").unwrap();
    DkimKey::save(&site, key.clone()).unwrap();
    (site, key)
}

fn outbox_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A runtime for the sending, after the blocking setup.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn mail_from_a_domain_with_a_key_is_signed_and_verifies_and_a_changed_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (site, key) = site_with_key(dir.path());
    assert_eq!(key.domain, "example.org");
    assert_eq!(key.record_name(), "s1._domainkey.example.org");
    let outbox = Outbox::for_site(dir.path().join("outbox"), site.clone());
    runtime().block_on(async {
        outbox
            .send(mail("Site <site@EXAMPLE.org>", "verify"))
            .await
            .unwrap();
        outbox
            .send(mail("other@example.com", "unsigned"))
            .await
            .unwrap();
    });
    let files = outbox_files(&dir.path().join("outbox"));
    assert_eq!(files.len(), 2);
    let (signed, unsigned) = if files[0].contains("verify") {
        (&files[0], &files[1])
    } else {
        (&files[1], &files[0])
    };
    assert!(signed.starts_with("DKIM-Signature:"), "{signed}");
    assert!(
        signed.contains("d=example.org") && signed.contains("s=s1"),
        "{signed}"
    );
    // What a receiver shows and threads by is there, and signed.
    for header in ["\nDate: ", "\nMessage-ID: ", "\nFrom: ", "\nSubject: "] {
        assert!(signed.contains(header), "{header} in {signed}");
    }
    let record = key.record_value();
    assert!(dkim_verifies(signed, &key.record_name(), &record));
    // A changed body, or another key's record, does not verify.
    let changed = signed.replace("https://example.org/verify", "https://evil.example/verify");
    assert!(!dkim_verifies(&changed, &key.record_name(), &record));
    let other = DkimKey::generate("example.org", "s1").unwrap();
    assert!(!dkim_verifies(
        signed,
        &key.record_name(),
        &other.record_value()
    ));
    // No key for its domain: sent as before, unsigned.
    assert!(!unsigned.contains("DKIM-Signature"), "{unsigned}");
}

#[test]
fn queued_mail_reaches_the_relay_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (site, key) = site_with_key(dir.path());
    let sink = SmtpSink::start();
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", sink.addr.port(), false),
        QueueSettings::default(),
    );
    runtime().block_on(async {
        queue.send(mail("site@example.org", "reset")).await.unwrap();
        assert_eq!(queue.run_due(Timestamp::now()).await.unwrap().delivered, 1);
    });
    let got = sink.wait_for(1);
    assert!(
        got[0].data.starts_with("DKIM-Signature:"),
        "{}",
        got[0].data
    );
    assert!(dkim_verifies(
        &got[0].data,
        &key.record_name(),
        &key.record_value()
    ));
}

#[test]
fn a_second_key_for_a_domain_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (site, first) = site_with_key(dir.path());
    let second = DkimKey::generate("example.org", "s2").unwrap();
    DkimKey::save(&site, second.clone()).unwrap();
    let keys = DkimKey::all(&site).unwrap();
    assert_eq!(keys, vec![second.clone()]);
    assert_ne!(first.public_key, second.public_key);
    assert_eq!(
        DkimKey::for_domain(&site, "EXAMPLE.ORG").unwrap(),
        Some(second)
    );
    // The record fits in a zone file: strings of at most 255 bytes.
    let line = first.zone_line();
    assert!(
        line.starts_with("s1._domainkey.example.org. 3600 IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{line}"
    );
    assert!(line.split('"').all(|s| s.len() <= 255), "{line}");
}
