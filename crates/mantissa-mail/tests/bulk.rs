//! Text and HTML parts, the headers every message carries, and bulk mail:
//! rendered messages read back with mail-parser, unsubscribe links signed
//! and checked, and bulk mail to an address that left its list not sent.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mantissa_mail::unsubscribe::{self, Subscription};
use mantissa_mail::{
    DkimKey, MailError, MailQueue, Mailer, Outbox, OutgoingMail, QueueSettings, SmtpRelay, admin,
    render, render_signed,
};
use mantissa_store::Site;
use mantissa_testkit::dkim_verifies;

fn mail(to: &str) -> OutgoingMail {
    OutgoingMail {
        from: "Example <news@Example.org>".into(),
        to: vec![to.into()],
        subject: "This week on Example".into(),
        text: "Three new posts:\nhttps://example.org/posts\n".into(),
        html: None,
        unsubscribe: None,
    }
}

fn site(dir: &std::path::Path) -> Site {
    mantissa_store::testing::open_site(&dir.join("site")).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn outbox_files(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn a_text_mail_is_one_text_part_with_a_date_and_a_message_id_in_the_senders_domain() {
    let bytes = render(&mail("ann@example.net")).unwrap();
    let message = MessageParser::default().parse(&bytes).unwrap();
    let ct = message.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("text", Some("plain")),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(message.parts.len(), 1);
    assert_eq!(
        message.body_text(0).unwrap(),
        "Three new posts:\r\nhttps://example.org/posts\r\n",
        "the text, with the CRLF line ends of the wire"
    );
    assert!(message.date().is_some(), "a Date header");
    let id = message.message_id().expect("a Message-ID");
    let (left, domain) = id.rsplit_once('@').unwrap();
    assert_eq!(domain, "example.org", "in the sender's domain: {id}");
    assert!(left.len() > 20, "unique enough: {id}");
    // A second message gets another id.
    let again = render(&mail("ann@example.net")).unwrap();
    let again = MessageParser::default().parse(&again).unwrap();
    assert_ne!(again.message_id(), Some(id));
    assert!(message.header("List-Unsubscribe").is_none(), "not bulk");
}

#[test]
fn text_and_html_are_multipart_alternative_text_first() {
    let mut m = mail("ann@example.net");
    m.html = Some(
        "<!DOCTYPE html><html lang=\"en\"><body><p>Three new posts: \
         <a href=\"https://example.org/posts\">read them</a></p></body></html>"
            .into(),
    );
    let bytes = render(&m).unwrap();
    let message = MessageParser::default().parse(&bytes).unwrap();
    let ct = message.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let PartType::Multipart(children) = &message.parts[0].body else {
        panic!("the root is multipart");
    };
    let types: Vec<String> = children
        .iter()
        .map(|&i| {
            let ct = message.parts[i as usize].content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        types,
        ["text/plain", "text/html"],
        "text first, HTML second"
    );
    assert_eq!(
        message.body_text(0).unwrap(),
        "Three new posts:\r\nhttps://example.org/posts\r\n",
        "the text, with the CRLF line ends of the wire"
    );
    assert!(
        message
            .body_html(0)
            .unwrap()
            .contains("href=\"https://example.org/posts\"")
    );
    assert!(message.message_id().is_some() && message.date().is_some());
}

#[test]
fn bulk_mail_carries_the_one_click_headers_and_dkim_signs_them() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path());
    let key = DkimKey::generate("example.org", "s1").unwrap();
    DkimKey::save(&site, key.clone()).unwrap();
    let rt = runtime();
    let url = rt
        .block_on(unsubscribe::link(
            &site,
            "https://example.org/",
            "Ann@Example.net",
            "weekly",
        ))
        .unwrap();
    assert!(url.starts_with("https://example.org/unsubscribe/"), "{url}");
    let mut m = mail("ann@example.net");
    m.unsubscribe = Some(url.clone());
    let bytes = rt.block_on(render_signed(&m, &site)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let message = MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(
        message.header_raw("List-Unsubscribe").map(str::trim),
        Some(format!("<{url}>").as_str())
    );
    assert_eq!(
        message.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(message.header("Precedence").is_none());
    // Both are in the signature's h= list, and the signature verifies.
    let signature = message.header_raw("DKIM-Signature").unwrap();
    let h: String = signature
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("h="))
        .unwrap()
        .split_whitespace()
        .collect::<String>()
        .to_ascii_lowercase();
    let signed: Vec<&str> = h.split(':').collect();
    assert!(signed.contains(&"list-unsubscribe"), "{h}");
    assert!(signed.contains(&"list-unsubscribe-post"), "{h}");
    assert!(
        signed.contains(&"message-id") && signed.contains(&"date"),
        "{h}"
    );
    assert!(dkim_verifies(
        &text,
        &key.record_name(),
        &key.record_value()
    ));
}

#[test]
fn an_unsubscribe_link_names_its_address_and_list_and_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_site = self::site(other.path());
    runtime().block_on(async {
        let token = unsubscribe::token(&site, " Ann@Example.NET", "weekly")
            .await
            .unwrap();
        assert_eq!(
            unsubscribe::verify(&site, &token).await.unwrap(),
            Some(Subscription {
                address: "ann@example.net".into(),
                list: "weekly".into()
            })
        );
        // The same link each time (the key is made once).
        assert_eq!(
            unsubscribe::token(&site, "ann@example.net", "weekly")
                .await
                .unwrap(),
            token
        );
        // Another address or list with this signature: refused.
        let (_, sig) = token.split_once('.').unwrap();
        use base64::Engine;
        let forged = format!(
            "{}.{sig}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bob@example.net\nweekly")
        );
        assert_eq!(unsubscribe::verify(&site, &forged).await.unwrap(), None);
        assert_eq!(unsubscribe::verify(&site, "nonsense").await.unwrap(), None);
        assert_eq!(unsubscribe::verify(&site, "").await.unwrap(), None);
        // Another site's key signs other links.
        unsubscribe::token(&other_site, "x@example.net", "weekly")
            .await
            .unwrap();
        assert_eq!(
            unsubscribe::verify(&other_site, &token).await.unwrap(),
            None
        );
        // Bad names are refused before anything is made.
        let e = unsubscribe::token(&site, "ann@example.net", "Weekly\nBcc")
            .await
            .unwrap_err();
        assert!(matches!(e, MailError::BadList { .. }), "{e}");
        assert!(e.to_string().contains("is not a list name"), "{e}");
        assert!(
            unsubscribe::token(&site, "not an address", "weekly")
                .await
                .is_err()
        );
    });
}

#[test]
fn bulk_mail_to_an_address_that_left_its_list_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path());
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::for_site(&outbox_dir, site.clone());
    // A queue whose relay is never reached: only queuing is looked at.
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", 9, false),
        QueueSettings::default(),
    );
    runtime().block_on(async {
        let bulk = |to: &str, url: String| OutgoingMail {
            unsubscribe: Some(url),
            ..mail(to)
        };
        let ann = unsubscribe::link(&site, "https://example.org", "ann@example.net", "weekly")
            .await
            .unwrap();
        let bob = unsubscribe::link(&site, "https://example.org", "bob@example.net", "weekly")
            .await
            .unwrap();
        assert!(
            !unsubscribe::is_unsubscribed(&site, "ann@example.net", "weekly")
                .await
                .unwrap()
        );
        assert!(
            unsubscribe::unsubscribe(&site, "ANN@example.net", "weekly")
                .await
                .unwrap()
        );
        assert!(
            !unsubscribe::unsubscribe(&site, "ann@example.net", "weekly")
                .await
                .unwrap(),
            "once"
        );
        assert!(
            unsubscribe::is_unsubscribed(&site, "Ann@Example.net", "weekly")
                .await
                .unwrap()
        );
        assert!(
            !unsubscribe::is_unsubscribed(&site, "ann@example.net", "daily")
                .await
                .unwrap(),
            "other lists are not left"
        );

        outbox
            .send(bulk("ann@example.net", ann.clone()))
            .await
            .unwrap();
        outbox
            .send(bulk("bob@example.net", bob.clone()))
            .await
            .unwrap();
        // Not bulk: a reset link goes, whatever lists the address left.
        outbox.send(mail("ann@example.net")).await.unwrap();
        let written = outbox_files(&outbox_dir);
        assert_eq!(written.len(), 2, "{written:?}");
        assert!(written.iter().any(|m| m.contains("To: <bob@example.net>")));
        assert!(
            !written
                .iter()
                .any(|m| m.contains("List-Unsubscribe") && m.contains("ann@example.net"))
        );

        queue
            .send(bulk("ann@example.net", ann.clone()))
            .await
            .unwrap();
        queue.send(bulk("bob@example.net", bob)).await.unwrap();
        let queued = admin::list(&site, true).await.unwrap();
        let recipients: Vec<&str> = queued.iter().map(|m| m.recipients.as_str()).collect();
        assert_eq!(recipients, ["bob@example.net"]);

        // Back on the list: sent again.
        assert!(
            unsubscribe::resubscribe(&site, "ann@example.net", "weekly")
                .await
                .unwrap()
        );
        outbox.send(bulk("ann@example.net", ann)).await.unwrap();
        assert_eq!(outbox_files(&outbox_dir).len(), 3);
    });
}
