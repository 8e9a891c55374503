//! Account flows over HTTP against a real server, with the mail read from a
//! real SMTP server on loopback.

mod support;

use std::time::{Duration, Instant};

use mantissa_testkit::*;
use support::world;

#[test]
fn sign_up_verify_by_mail_log_in_and_reset_the_password() {
    let w = world(|a| a);
    let s = &w.server;
    let mut ann = Visitor::default();

    let r = ann.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "ann"),
            ("email", "Ann@Example.org"),
            ("password", "a long password 1"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("We sent you a link. Follow it to activate your account.")
    );

    // Not before verification.
    let r = ann.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "a long password 1")],
    );
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("please verify your email address first"),
        "{}",
        r.text()
    );

    let mail = w.smtp.wait_for(1);
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, ["ann@example.org"]);
    assert!(
        mail[0]
            .data
            .contains("Subject: Please verify your email address")
    );
    let link = link_in(&mail[0].data);
    // The link shows a page; its button verifies (issue 13, item 19).
    let link = path_of(&link);
    let r = ann.submit(s, &link, &link, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("Your email address is verified")
    );
    assert_eq!(
        ann.submit(s, &link, &link, &[]).status,
        404,
        "a link works once"
    );
    assert!(
        s.site.has_user_store("ann").unwrap(),
        "the account has its own store"
    );

    // Log in: the session id changes at log-in.
    let before = ann.cookie("mantissa_session").map(str::to_string);
    let r = ann.submit(
        s,
        "/login?next=/private/settings",
        "/login",
        &[
            ("who", "ANN@example.org"),
            ("password", "a long password 1"),
            ("next", "/private/settings"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/private/settings"));
    let session = ann.cookie("mantissa_session").unwrap().to_string();
    assert_ne!(Some(session.clone()), before);
    let page = ann.get(s, "/private/settings");
    assert!(page.text().contains("Settings for ann"), "{}", page.text());

    let session_cookie = set_cookie(&r, "mantissa_session").unwrap();
    // Without "remember me", a browser-session cookie (issue 13, item 18);
    // the store still ends the session after 12 hours.
    assert!(
        !session_cookie.contains("Max-Age") && !session_cookie.contains("Expires"),
        "a session ends with the browser: {session_cookie}"
    );

    // A second device, remembered, then a reset from the first: every
    // session ends.
    let mut phone = Visitor::default();
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", "a long password 1"),
            ("remember", "1"),
        ],
    );
    assert_eq!(r.status, 303);
    let remembered = set_cookie(&r, "mantissa_session").unwrap();
    assert!(
        remembered.contains("Max-Age=2592000"),
        "remembered for 30 days: {remembered}"
    );
    let r = ann.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("If an account has this address")
    );
    let mail = w.smtp.wait_for(2);
    let reset = path_of(&link_in(&mail[1].data));
    let r = ann.submit(s, &reset, &reset, &[("password", "another long password")]);
    // Post, redirect, get: the log-in page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("Your new password is set")
    );
    assert_eq!(
        phone.get(s, "/private/settings").status,
        303,
        "the other session ended"
    );
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "a long password 1")],
    );
    assert_eq!(r.status, 401, "the old password no longer works");
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "another long password")],
    );
    assert_eq!(r.status, 303);

    // A reset for an unknown address says the same and sends nothing.
    let r = ann.submit(s, "/reset", "/reset", &[("email", "nobody@example.org")]);
    assert_eq!(r.status, 303, "the same answer for an unknown address");
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("If an account has this address")
    );
    // A mistyped address is said so, on the form, with what was typed:
    // not a page claiming a link went out.
    let r = ann.submit(s, "/reset", "/reset", &[("email", "ann at example")]);
    assert_eq!(r.status, 422, "{}", r.text());
    let page = shown(&r.text());
    assert!(page.contains("is not an email address"), "{page}");
    assert!(page.contains(r#"value="ann at example""#), "{page}");
    assert!(page.contains(r#"aria-describedby="email-error""#), "{page}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(w.settled_mail().len(), 2);

    // The reset ended this browser's session too; the phone logs out.
    assert_eq!(ann.get(s, "/private/settings").status, 303);
    let r = phone.submit(s, "/private/settings", "/logout", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(phone.get(s, "/private/settings").status, 303);
}

#[test]
fn a_post_without_a_csrf_token_is_refused() {
    let w = world(|a| a);
    let r = w
        .server
        .post_form("/login", &[], "who=ann&password=whatever12");
    assert_eq!(r.status, 403);
}

#[test]
fn brute_force_is_throttled() {
    let w = world(|a| a);
    w.accounts
        .create_user(
            "bob",
            Some("bob@example.org"),
            Some("bob's long password"),
            false,
        )
        .unwrap();
    let s = &w.server;
    let mut mallory = Visitor::default();
    let limit = mantissa_accounts::ATTEMPTS_PER_MINUTE_PER_ACCOUNT as usize;
    let statuses: Vec<u16> = (0..limit + 2)
        .map(|i| {
            mallory
                .submit(
                    s,
                    "/login",
                    "/login",
                    &[("who", "bob"), ("password", &format!("guess number {i}"))],
                )
                .status
        })
        .collect();
    assert!(statuses[..limit].iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(statuses[limit + 1], 429, "{statuses:?}");

    // Slower guessing is slowed down more and more, and never locks the
    // account: see login_attacks.rs.
}

#[test]
fn logging_in_as_nobody_takes_as_long_as_logging_in_as_somebody() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("carol", None, Some("carol's long password"), false)
        .unwrap();
    // As in the server: work spawned by one log-in (counting a failure)
    // runs beside the next, not inside it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let attempt = |who: &str, i: usize| {
        let start = Instant::now();
        let _ = rt.block_on(w.accounts.login(None, who, &format!("wrong password {i}")));
        start.elapsed()
    };
    attempt("nobody-at-all", 0); // the dummy hash is made on first use
    // Alternate, so that whatever else the machine does weighs on both,
    // and compare medians.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..15 {
        known.push(attempt("carol", i));
        unknown.push(attempt("nobody-at-all", i));
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[7], unknown[7]);
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {known:?}, unknown {unknown:?}"
    );
}

#[test]
fn stored_xss_payloads_render_inert() {
    let w = world(|a| a);
    let s = &w.server;
    let mut v = Visitor::default();
    for payload in [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "javascript:alert(1)",
        "'><svg onload=alert(1)>",
        "{{ 7*7 }}",
    ] {
        let r = v.submit(
            s,
            "/signup",
            "/signup",
            &[("username", payload), ("email", payload), ("password", "x")],
        );
        assert_eq!(r.status, 422);
        let html = r.text();
        assert!(
            !html.contains("<script>alert")
                && !html.contains("<img src=x")
                && !html.contains("<svg"),
            "{html}"
        );
        if payload.starts_with("{{") {
            assert!(
                html.contains("{{ 7*7 }}"),
                "templates are not evaluated from input: {html}"
            );
        }
        let r = v.submit(
            s,
            "/login",
            "/login",
            &[("who", payload), ("password", "x")],
        );
        assert!(!r.text().contains("<script>alert") && !r.text().contains("<svg"));
    }
}

#[test]
fn a_new_email_address_is_used_once_it_is_proved() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user(
            "ann",
            Some("ann@old.example"),
            Some("ann's long password"),
            false,
        )
        .unwrap();
    let s = &w.server;
    let mut ann = Visitor::default();
    let r = ann.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann@old.example"),
            ("password", "ann's long password"),
        ],
    );
    assert_eq!(r.status, 303);
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[
            ("email", "ann@new.example"),
            ("password", "wrong password!"),
        ],
    );
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("The password is wrong.")
            && shown(&r.text()).contains("value=\"ann@new.example\""),
        "the form again, with the address typed and why: {}",
        r.text()
    );
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
    let landed = ann.follow(s, &r);
    assert!(
        shown(&landed.text()).contains("We sent a link to the new address"),
        "{}",
        landed.text()
    );
    let mail = w.smtp.wait_for(1);
    assert_eq!(mail[0].to, ["ann@new.example"]);
    // Until the link is followed, the old address is the one.
    let mut other = Visitor::default();
    assert_eq!(
        other
            .submit(
                s,
                "/login",
                "/login",
                &[
                    ("who", "ann@old.example"),
                    ("password", "ann's long password")
                ]
            )
            .status,
        303
    );
    let link = path_of(&link_in(&mail[0].data));
    let r = ann.submit(s, &link, &link, &[]);
    // Back on the settings, which say so and show the new address.
    assert_eq!(r.status, 303, "{}", r.text());
    let landed = shown(&ann.follow(s, &r).text());
    assert!(
        landed.contains("Your email address was changed.")
            && landed.contains("Now: ann@new.example."),
        "{landed}"
    );
    let mut again = Visitor::default();
    assert_eq!(
        again
            .submit(
                s,
                "/login",
                "/login",
                &[
                    ("who", "ann@new.example"),
                    ("password", "ann's long password")
                ]
            )
            .status,
        303
    );
    assert_eq!(
        again
            .submit(
                s,
                "/login",
                "/login",
                &[
                    ("who", "ann@old.example"),
                    ("password", "ann's long password")
                ]
            )
            .status,
        401
    );
}
