//! Bulk mail and its unsubscribe links over real HTTP (issue 16, item 4):
//! a provider's one-click POST (no cookie, no CSRF token) unsubscribes,
//! the address is then reported unsubscribed and the next bulk message to
//! it is not sent; a person following the link gets a page with a button
//! and ends on a page that says what happened. And the accounts' own mails
//! go as text and HTML.

mod support;

use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders};
use mantissa_mail::unsubscribe;
use mantissa_mail::{MailQueue, Mailer, OutgoingMail, QueueSettings, SmtpRelay};
use mantissa_testkit::*;
use support::{block_on, world};

fn digest(to: &str, link: String) -> OutgoingMail {
    OutgoingMail {
        from: "site@example.org".into(),
        to: vec![to.into()],
        subject: format!("Your digest, {to}"),
        text: format!("Two new notes.\n\nTo get no more digests: {link}\n"),
        html: None,
        unsubscribe: Some(link),
    }
}

#[test]
fn one_click_unsubscribes_and_the_next_bulk_mail_is_not_sent() {
    let w = world(|a| a);
    let s = &w.server;
    let site = &s.site;
    let base = format!("http://{}", s.addr);
    // The application's own sending: through a queue in the site store,
    // which the world's runner delivers to the sink.
    let queue: Arc<dyn Mailer> = Arc::new(MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", w.smtp.addr.port(), false),
        QueueSettings::default(),
    ));
    let ann = block_on(unsubscribe::link(site, &base, "ann@example.org", "digest")).unwrap();
    let bob = block_on(unsubscribe::link(site, &base, "bob@example.org", "digest")).unwrap();

    block_on(queue.send(digest("ann@example.org", ann.clone()))).unwrap();
    let mail = w.smtp.wait_for(1);
    let parsed = MessageParser::default()
        .parse(mail[0].data.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.header_raw("List-Unsubscribe").map(str::trim),
        Some(format!("<{ann}>").as_str())
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );

    // The provider's POST: no cookie, no token, from another origin.
    let path = path_of(&ann);
    let r = s.post_form(
        &path,
        &[("Origin", "https://mail.provider.example")],
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        shown(&r.text()).contains("ann@example.org will get no more mail of the list “digest”")
    );
    assert!(
        block_on(unsubscribe::is_unsubscribed(
            site,
            "ann@example.org",
            "digest"
        ))
        .unwrap()
    );
    assert!(
        !block_on(unsubscribe::is_unsubscribed(
            site,
            "bob@example.org",
            "digest"
        ))
        .unwrap()
    );
    // Again: still 200 (providers may retry).
    assert_eq!(
        s.post_form(&path, &[], "List-Unsubscribe=One-Click").status,
        200
    );

    // The exemption is that path's alone: another form without its token
    // is refused as before.
    let r = s.post_form("/reset", &[], "email=ann%40example.org");
    assert_eq!(r.status, 403, "{}", r.text());

    // The next digest goes to Bob only.
    block_on(queue.send(digest("ann@example.org", ann.clone()))).unwrap();
    block_on(queue.send(digest("bob@example.org", bob))).unwrap();
    w.smtp.wait_for(2);
    let mail = w.settled_mail();
    let to: Vec<&str> = mail.iter().map(|m| m.to[0].as_str()).collect();
    assert_eq!(to, ["ann@example.org", "bob@example.org"]);
    let queued = block_on(mantissa_mail::admin::list(site, true)).unwrap();
    assert_eq!(queued.len(), 2, "the skipped one was never queued");

    // A link that is not the site's.
    let forged = format!("{path}x");
    let r = s.get(&forged);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("Link not valid"), "{}", r.text());
    assert_eq!(
        s.post_form(&forged, &[], "List-Unsubscribe=One-Click")
            .status,
        404
    );
    assert_eq!(s.post_form("/unsubscribe/nonsense", &[], "").status, 404);
}

#[test]
fn a_person_following_the_link_confirms_with_a_button() {
    let w = world(|a| a);
    let s = &w.server;
    let base = format!("http://{}", s.addr);
    let link = block_on(unsubscribe::link(
        &s.site,
        &base,
        "Cy@Example.org",
        "comments",
    ))
    .unwrap();
    let path = path_of(&link);
    let mut cy = Visitor::default();

    // Following the link changes nothing; it shows a button.
    let page = cy.get(s, &path);
    assert_eq!(page.status, 200, "{}", page.text());
    let text = shown(&page.text());
    assert!(text.contains("<h1>Unsubscribe</h1>"), "{text}");
    assert!(
        text.contains("mail of the list “comments” from this site to cy@example.org"),
        "{text}"
    );
    assert!(
        text.contains("<button type=\"submit\">Unsubscribe</button>"),
        "{text}"
    );
    assert!(
        !block_on(unsubscribe::is_unsubscribed(
            &s.site,
            "cy@example.org",
            "comments"
        ))
        .unwrap()
    );

    // The button.
    let r = cy.submit(s, &path, &path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = shown(&r.text());
    assert!(text.contains("<h1>Unsubscribed</h1>"), "{text}");
    assert!(
        text.contains(
            "cy@example.org will get no more mail of the list “comments” from this site."
        ),
        "{text}"
    );
    assert!(
        block_on(unsubscribe::is_unsubscribed(
            &s.site,
            "cy@example.org",
            "comments"
        ))
        .unwrap()
    );
    let left = block_on(unsubscribe::lists_left(&s.site, "cy@example.org")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].list.as_str(), left[0].address.as_str()),
        ("comments", "cy@example.org")
    );

    // The link again: it says so.
    let again = shown(&cy.get(s, &path).text());
    assert!(again.contains("Already unsubscribed"), "{again}");
}

#[test]
fn the_accounts_mails_are_text_and_html_with_the_same_link() {
    let w = world(|a| a);
    let s = &w.server;
    let mut ann = Visitor::default();
    let r = ann.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "ann"),
            ("email", "ann@example.org"),
            ("password", "a long password 1"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let mail = w.smtp.wait_for(1);
    let parsed = MessageParser::default()
        .parse(mail[0].data.as_bytes())
        .unwrap();
    let ct = parsed.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    assert!(parsed.header("List-Unsubscribe").is_none(), "not bulk mail");
    let text = parsed.body_text(0).unwrap();
    let html = parsed.body_html(0).unwrap();
    let link = link_in(&text);
    assert!(link.contains("/verify/"), "{link}");
    let href = html
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(shown(href), link, "the same link in both parts");
    assert!(html.contains("<html lang=\"en\">"), "{html}");
    // The verification still works from the link.
    let r = ann.submit(s, &path_of(&link), &path_of(&link), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
}
