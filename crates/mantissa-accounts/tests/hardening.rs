//! Issue 13's hardening items that need accounts, over HTTP against a real
//! server on loopback: what a signed-in user's browser is told to keep,
//! the session cookie, one-time links that act only on a POST, and the
//! admin console's messages.

mod support;

use mantissa_testkit::*;
use support::{logged_in, world};

/// Item 17: pages behind a log-in were sent `no-cache` with an ETag, so
/// after log-out Back showed them from the browser's cache.
#[test]
fn pages_behind_a_log_in_are_sent_private_no_store() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    for path in [
        "/private/notes",
        "/private/settings",
        "/api/private/notes",
        "/admin",
        "/api/admin",
    ] {
        let r = root.get(s, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("private, no-store"),
            "{path}"
        );
        assert!(r.header("etag").is_none(), "{path}");
        // Nothing to revalidate against: a stored copy would be the
        // problem, so the page is always sent whole.
        let again = s.get_with(path, &[("Cookie", &root.header()), ("If-None-Match", "*")]);
        assert_eq!(again.status, 200, "{path}");
    }
}

/// Item 19: `/verify/…` and `/email/…` acted on GET, so a mail scanner or
/// a link prefetcher that fetched the link completed them. Now a GET (any
/// number of them) shows a page with a button and changes nothing; the
/// button's POST does it.
#[test]
fn mailed_links_act_only_when_their_button_is_pressed() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    let s = &w.server;
    let mut ann = Visitor::default();
    let r = ann.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "ann"),
            ("email", "ann@example.org"),
            ("password", "ann's long password"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let verify = path_of(&link_in(&w.smtp.wait_for(1)[0].data));
    assert!(verify.starts_with("/verify/"), "{verify}");
    let log_in = |v: &mut Visitor| {
        v.submit(
            s,
            "/login",
            "/login",
            &[("who", "ann"), ("password", "ann's long password")],
        )
    };

    // The scanner: a plain GET, three times, with no cookies.
    for _ in 0..3 {
        let r = s.get(&verify);
        assert_eq!(r.status, 200);
        assert!(r.text().contains("<form method=\"post\">"), "{}", r.text());
        assert!(r.text().contains("Verify my address"));
    }
    assert_eq!(
        log_in(&mut Visitor::default()).status,
        401,
        "still unverified"
    );
    // The person presses the button.
    let r = ann.submit(s, &verify, &verify, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("Your email address is verified")
    );
    assert_eq!(log_in(&mut ann).status, 303);

    // The same for a change of address.
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[
            ("email", "ann@new.example"),
            ("password", "ann's long password"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let mail = w.smtp.wait_for(2);
    let change = path_of(&link_in(&mail[1].data));
    assert!(change.starts_with("/email/"), "{change}");
    for _ in 0..3 {
        let r = s.get(&change);
        assert_eq!(r.status, 200);
        assert!(r.text().contains("Use this address"));
    }
    let settings = shown(&ann.get(s, "/private/settings").text());
    assert!(settings.contains("Now: ann@example.org."), "{settings}");
    let r = ann.submit(s, &change, &change, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let landed = shown(&ann.follow(s, &r).text());
    assert!(
        landed.contains("Your email address was changed.")
            && landed.contains("Now: ann@new.example."),
        "{landed}"
    );
    let settings = shown(&ann.get(s, "/private/settings").text());
    assert!(settings.contains("Now: ann@new.example."), "{settings}");
}
