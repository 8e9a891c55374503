//! The attacks on log-in, second factors and one-time links that issue 13
//! reported (items 4, 6–13, 21), each replayed over HTTP against a real
//! server on loopback, as the attacker (and then the owner) would see it.
//! Many visitors come from their own addresses in 127.0.0.0/8.

mod support;

use std::sync::{Arc, Barrier};

use mantissa_testkit::*;
use support::*;

const ANN_PW: &str = "ann's long password";

fn with_ann(w: &World) {
    w.accounts
        .create_user("ann", Some("ann@example.org"), Some(ANN_PW), false)
        .unwrap();
}

/// Item 7: six simultaneous log-ins with one code, from six addresses.
#[test]
fn a_totp_code_replayed_by_concurrent_log_ins_opens_one_session() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let secret = enable_totp(&w.accounts, "ann");
    let code = next_code(&secret);
    let s = &w.server;
    // Each attacker loads the form first (its CSRF token), then all post
    // at once.
    let mut prepared: Vec<(Visitor, String)> = (0..6)
        .map(|i| {
            let mut v = Visitor::at(&format!("127.0.7.{}", i + 1));
            let body = v.form_body(
                s,
                "/login",
                &[("who", "ann"), ("password", ANN_PW), ("code", &code)],
            );
            (v, body)
        })
        .collect();
    let barrier = Arc::new(Barrier::new(prepared.len()));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .iter_mut()
            .map(|(v, body)| {
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    v.post(s, "/login", body).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sessions = statuses.iter().filter(|s| **s == 303).count();
    assert_eq!(sessions, 1, "one code, one session: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 303 || *s == 401),
        "{statuses:?}"
    );
}

/// Item 8: a write-scoped token cannot enrol a second factor (which would
/// lock the owner out), nor change the password or the email address.
#[test]
fn a_write_token_cannot_change_the_password_email_or_second_factor() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let mut ann = logged_in(s, "ann", ANN_PW);
    let token = make_token(s, &mut ann, "script", true);

    let begin = with_token(s, &token, "POST", "/api/private/settings/totp/begin", "");
    assert_eq!(begin.status, 403, "{}", begin.text());
    assert!(
        !begin.text().contains("otpauth") && begin.text().contains("an API token cannot"),
        "{}",
        begin.text()
    );
    let on = with_token(
        s,
        &token,
        "POST",
        "/api/private/settings/totp/on",
        "code=123456",
    );
    assert_eq!(on.status, 403);
    let pw = with_token(
        s,
        &token,
        "POST",
        "/api/private/settings/password",
        "current=ann%27s+long+password&new=a+password+of+mallory",
    );
    assert_eq!(pw.status, 403);
    let email = with_token(
        s,
        &token,
        "POST",
        "/api/private/settings/email",
        "email=mallory%40evil.example&password=x",
    );
    assert_eq!(email.status, 403);
    // Nothing changed: the owner logs in with her password and no code.
    logged_in(s, "ann", ANN_PW);
    assert!(!block_on(w.accounts.totp_enabled("ann")).unwrap());
    // The token itself still works for what it is for.
    assert_eq!(
        with_token(s, &token, "GET", "/api/private/notes", "").status,
        200
    );
}

/// Item 8: a reset turns the second factor off (the person lost it), and
/// the owner is told by mail; so can an administrator.
#[test]
fn a_reset_or_an_administrator_turns_the_second_factor_off_and_mails_the_owner() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    enable_totp(&w.accounts, "ann");
    let mut ann = Visitor::default();
    ann.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    let mail = w.smtp.wait_for(1);
    let reset = path_of(&link_in(&mail[0].data));
    let r = ann.submit(
        s,
        &reset,
        &reset,
        &[("password", "ann's new long password")],
    );
    // Post, redirect, get: the log-in page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        ann.follow(s, &r)
            .text()
            .contains("Your new password is set")
    );
    let mail = w.smtp.wait_for(2);
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert_eq!(mail[1].to, ["ann@example.org"]);
    assert!(
        mail[1]
            .data
            .contains("Subject: Two-factor log-in was turned off")
            && mail[1].data.contains("turned off because its password"),
        "{}",
        mail[1].data
    );
    logged_in(s, "ann", "ann's new long password");

    // Again on, then off by an administrator.
    enable_totp(&w.accounts, "ann");
    let mut root = logged_in(s, "root", "root's long password");
    let r = root.submit(s, "/admin/users", "/admin/users/ann/two-factor-off", &[]);
    assert_eq!(r.status, 303);
    let page = root.get(s, r.header("location").unwrap());
    assert!(
        shown(&page.text()).contains("Two-factor log-in of ann is off"),
        "{}",
        page.text()
    );
    let mail = w.smtp.wait_for(3);
    assert!(
        mail[2].data.contains("by an administrator"),
        "{}",
        mail[2].data
    );
    logged_in(s, "ann", "ann's new long password");
}

/// Item 9: with two-factor log-in on, the password alone proves the
/// signed-in person when they change their password or address (this
/// answered 500).
#[test]
fn users_with_a_second_factor_change_their_password_and_email() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let secret = enable_totp(&w.accounts, "ann");
    let mut ann = logged_in_with_code(s, "ann", ANN_PW, &next_code(&secret));
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[("email", "ann@new.example"), ("password", ANN_PW)],
    );
    // Post, redirect, get: the settings page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    let landed = ann.follow(s, &r);
    assert!(shown(&landed.text()).contains("We sent a link to the new address"));
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/password",
        &[
            ("current", "not the password"),
            ("new", "ann's newer password"),
        ],
    );
    // The form again, its message beside the field (422: the person is
    // signed in; it is the form that is wrong).
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("The current password is wrong."));
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/password",
        &[("current", ANN_PW), ("new", "ann's newer password")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(ann.follow(s, &r).text().contains("Password changed."));
}

/// Item 6: the per-account limit does not start again for `dave `, ` dave`
/// or `DAVE`; they are one account.
#[test]
fn spaces_and_capitals_do_not_give_an_account_new_attempts() {
    let w = world(|a| a);
    w.accounts
        .create_user("dave", None, Some("dave's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut mallory = Visitor::at("127.0.6.1");
    let names = ["dave", "dave ", " dave", "DAVE", "\tdave", "Dave "];
    let limit = mantissa_accounts::ATTEMPTS_PER_MINUTE_PER_ACCOUNT as usize;
    let statuses: Vec<u16> = names
        .iter()
        .cycle()
        .take(limit + 1)
        .map(|who| {
            mallory
                .submit(
                    s,
                    "/login",
                    "/login",
                    &[("who", who), ("password", "a guess!!")],
                )
                .status
        })
        .collect();
    assert!(statuses[..limit].iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(
        statuses[limit], 429,
        "one try too many at dave: {statuses:?}"
    );
    // Another address has its own attempts at dave: the limit is not a
    // lock a stranger can put on him.
    logged_in_at(s, "127.0.6.2", "dave", "dave's long password");
}

fn logged_in_at(s: &TestServer, ip: &str, who: &str, password: &str) -> Visitor {
    let mut v = Visitor::at(ip);
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[("who", who), ("password", password)],
    );
    assert_eq!(r.status, 303, "{who} logs in from {ip}: {}", r.text());
    v
}

/// Item 6: wrong codes after the right password are counted, with their
/// own back-off, from however many addresses they come.
#[test]
fn wrong_codes_after_the_right_password_make_the_account_wait() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let secret = enable_totp(&w.accounts, "ann");
    let s = &w.server;
    for i in 0..6 {
        let mut v = Visitor::at(&format!("127.0.5.{}", i + 1));
        let r = v.submit(
            s,
            "/login",
            "/login",
            &[("who", "ann"), ("password", ANN_PW), ("code", "000000")],
        );
        assert_eq!(r.status, 401, "wrong code {i}: {}", r.text());
    }
    let mut v = Visitor::at("127.0.5.100");
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", ANN_PW),
            ("code", &next_code(&secret)),
        ],
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.text().contains("too many failed attempts; please wait"),
        "{}",
        r.text()
    );
}

/// Item 6: the enrolment routes are throttled too (a new secret per click,
/// and guesses at the code that turns it on).
#[test]
fn totp_enrolment_is_throttled() {
    let w = world(|a| a);
    with_ann(&w);
    let s = &w.server;
    let mut ann = logged_in(s, "ann", ANN_PW);
    // Begun as often as a log-in may be tried, then refused.
    let limit = mantissa_accounts::ATTEMPTS_PER_MINUTE_PER_ACCOUNT as usize;
    let begins: Vec<u16> = (0..=limit)
        .map(|_| {
            ann.submit(s, "/private/settings", "/private/settings/totp/begin", &[])
                .status
        })
        .collect();
    // Each begun set-up goes back to the settings (POST-redirect-GET).
    assert!(begins[..limit].iter().all(|&s| s == 303), "{begins:?}");
    assert_eq!(begins[limit], 429, "{begins:?}");
    let guesses: Vec<u16> = (0..7)
        .map(|i| {
            ann.submit(
                s,
                "/private/settings",
                "/private/settings/totp/on",
                &[("code", &format!("00000{i}"))],
            )
            .status
        })
        .collect();
    assert_eq!(guesses[..6], [422; 6], "{guesses:?}");
    assert_eq!(guesses[6], 429, "{guesses:?}");
}

/// Item 4: names and addresses longer than any account's are refused with
/// a clear page before they are used as anything (they were limiter keys
/// kept forever), and not sent back.
#[test]
fn over_long_names_and_addresses_are_refused_first() {
    let w = world(|a| a);
    let s = &w.server;
    let huge = "a".repeat(1_900_000) + "@example.org";
    let mut v = Visitor::at("127.0.4.1");
    for _ in 0..3 {
        let r = v.submit(s, "/reset", "/reset", &[("email", &huge)]);
        assert_eq!(r.status, 400, "{}", r.status);
        assert!(r.text().contains("too long"), "{}", r.text());
        assert!(r.body.len() < 100_000, "not sent back");
        let r = v.submit(s, "/login", "/login", &[("who", &huge), ("password", "x")]);
        assert_eq!(r.status, 400);
        assert!(r.text().contains("too long") && r.body.len() < 100_000);
        let r = v.submit(
            s,
            "/signup",
            "/signup",
            &[("username", "ann"), ("email", &huge), ("password", ANN_PW)],
        );
        assert_eq!(r.status, 400);
        assert!(r.text().contains("too long") && r.body.len() < 100_000);
    }
    assert!(w.settled_mail().is_empty());
}

/// Item 10: once a password link is used, or the password changes, every
/// other link of the account is dead (reset mails, email change links).
#[test]
fn one_time_links_die_when_the_password_changes() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let mut v = Visitor::default();
    v.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    w.smtp.wait_for(1);
    v.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    let mail = w.smtp.wait_for(2);
    let (first, second) = (
        path_of(&link_in(&mail[0].data)),
        path_of(&link_in(&mail[1].data)),
    );
    let r = v.submit(
        s,
        &second,
        &second,
        &[("password", "ann's second password")],
    );
    // Post, redirect, get: the log-in page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(v.follow(s, &r).text().contains("Your new password is set"));
    let r = v.get(s, &first);
    assert_eq!(r.status, 404, "the other reset link died");
    assert!(r.text().contains("Link not valid"));

    // An email change link dies when the password is changed.
    let mut ann = logged_in(s, "ann", "ann's second password");
    ann.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[
            ("email", "ann@new.example"),
            ("password", "ann's second password"),
        ],
    );
    let mail = w.smtp.wait_for(3);
    let change = path_of(&link_in(&mail[2].data));
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/password",
        &[
            ("current", "ann's second password"),
            ("new", "ann's third password"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    // The link's page has a button (mail scanners follow links); pressing it
    // changes nothing.
    let r = ann.submit(s, &change, &change, &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("Link not valid"), "{}", r.text());
}

/// Item 10: each start of a new site prints a link to set the
/// administrator's password; only the newest works, and once.
#[test]
fn only_the_last_printed_administrator_link_works_and_once() {
    let w = world(|a| a);
    let s = &w.server;
    let first = path_of(&w.accounts.admin_setup_link().unwrap().unwrap());
    let second = path_of(&w.accounts.admin_setup_link().unwrap().unwrap());
    let mut v = Visitor::default();
    assert_eq!(v.get(s, &first).status, 404, "the earlier start's link");
    let r = v.submit(s, &second, &second, &[("password", "the admin's password")]);
    // Post, redirect, get: the log-in page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(v.follow(s, &r).text().contains("Your new password is set"));
    assert_eq!(v.get(s, &second).status, 404);
    let mut admin = logged_in(s, "admin", "the admin's password");
    assert_eq!(admin.get(s, "/admin").status, 200);
}

/// Item 11: failed passwords from strangers slow the account down, never
/// lock it, and never touch its API tokens; a reset ends the tokens, and
/// so does a suspension, for good.
#[test]
fn strangers_cannot_lock_an_account_or_its_tokens() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user(
            "bob",
            Some("bob@example.org"),
            Some("bob's long password"),
            false,
        )
        .unwrap();
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut bob = logged_in(s, "bob", "bob's long password");
    let token = make_token(s, &mut bob, "phone", false);
    for i in 0..15 {
        let mut mallory = Visitor::at(&format!("127.0.3.{}", i + 1));
        let r = mallory.submit(
            s,
            "/login",
            "/login",
            &[("who", "bob"), ("password", &format!("guess {i}"))],
        );
        assert!(matches!(r.status, 401 | 429), "{} {}", r.status, r.text());
    }
    assert_eq!(
        with_token(s, &token, "GET", "/api/private/notes", "").status,
        200,
        "failed passwords do not disable tokens"
    );
    // Bob waits out the back-off (seconds, not a lock), retrying as a
    // person would; bounded.
    let mut bob = Visitor::at("127.0.3.200");
    let mut last = 0;
    for _ in 0..40 {
        last = bob
            .submit(
                s,
                "/login",
                "/login",
                &[("who", "bob"), ("password", "bob's long password")],
            )
            .status;
        if last != 429 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(last, 303, "bob gets in");
    assert!(w.settled_mail().is_empty(), "no lock, no unlock mail");

    // A reset ends the tokens.
    bob.submit(s, "/reset", "/reset", &[("email", "bob@example.org")]);
    let mail = w.smtp.wait_for(1);
    let reset = path_of(&link_in(&mail[0].data));
    bob.submit(
        s,
        &reset,
        &reset,
        &[("password", "bob's new long password")],
    );
    assert_eq!(
        with_token(s, &token, "GET", "/api/private/notes", "").status,
        401
    );
    // So does a suspension, for good.
    let mut bob = logged_in(s, "bob", "bob's new long password");
    let token = make_token(s, &mut bob, "phone again", false);
    let mut root = logged_in(s, "root", "root's long password");
    root.submit(s, "/admin/users", "/admin/users/bob/suspend", &[]);
    assert_eq!(
        with_token(s, &token, "GET", "/api/private/notes", "").status,
        401
    );
    root.submit(s, "/admin/users", "/admin/users/bob/unsuspend", &[]);
    logged_in(s, "bob", "bob's new long password");
    assert_eq!(
        with_token(s, &token, "GET", "/api/private/notes", "").status,
        401,
        "not back after unsuspending"
    );
}

/// Item 12: `next` is resolved against the site and must stay on it; a
/// strange one never turns a log-in into a 500.
#[test]
fn next_cannot_leave_the_site_nor_break_the_log_in() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    // A `next` that is refused lands on ann's first application instead:
    // the notes.
    for (next, expected) in [
        ("/\t/evil.example/phish", "/private/notes"),
        ("/\\evil.example/phish", "/private/notes"),
        ("//evil.example/phish", "/private/notes"),
        ("\\\\evil.example", "/private/notes"),
        ("https://evil.example/", "/private/notes"),
        ("/private/notes\r\nSet-Cookie: x=y", "/private/notes"),
        ("/private/notes\n", "/private/notes"),
        ("/.//evil.example/phish", "/private/notes"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        (" /private/notes", "/private/notes"),
        ("/private/notes?tab=1#top", "/private/notes?tab=1#top"),
        ("", "/private/notes"),
    ] {
        let mut v = Visitor::default();
        let r = v.submit(
            s,
            "/login",
            "/login",
            &[("who", "ann"), ("password", ANN_PW), ("next", next)],
        );
        assert_eq!(r.status, 303, "next {next:?}: {}", r.text());
        assert_eq!(r.header("location"), Some(expected), "next {next:?}");
    }
}

/// Item 13: sign-up with an address that has an account answers as for a
/// new one; the owner is mailed instead.
#[test]
fn sign_up_with_a_registered_address_answers_as_for_a_new_one() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let mut v = Visitor::default();
    let known = v.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "mallory"),
            ("email", "ann@example.org"),
            ("password", "a long password 1"),
        ],
    );
    let new = v.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "zed"),
            ("email", "zed@example.org"),
            ("password", "a long password 1"),
        ],
    );
    // Both redirect to the same page, saying the same.
    assert_eq!((known.status, new.status), (303, 303));
    assert_eq!(known.header("location"), new.header("location"));
    assert_eq!(
        shown(&known.text()).replace("ann@example.org", "ADDRESS"),
        shown(&new.text()).replace("zed@example.org", "ADDRESS"),
        "the same page"
    );
    let mail = w.smtp.wait_for(2);
    let to_ann = mail
        .iter()
        .find(|m| m.to == ["ann@example.org"])
        .expect("ann is told");
    assert!(
        to_ann.data.contains("Subject: You already have an account") && to_ann.data.contains("ann"),
        "{}",
        to_ann.data
    );
    // No account was made for mallory.
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[("who", "mallory"), ("password", "a long password 1")],
    );
    assert_eq!(r.status, 401);
}

/// Item 21: however often (and from wherever) a reset is asked for, one
/// account gets a few mails an hour.
#[test]
fn reset_mails_are_limited_per_account_per_hour() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    for i in 0..8 {
        let mut v = Visitor::at(&format!("127.0.2.{}", i + 1));
        let r = v.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
        assert!(
            v.follow(s, &r)
                .text()
                .contains("If an account has this address")
        );
    }
    let limit = mantissa_accounts::RESETS_PER_HOUR as usize;
    w.smtp.wait_for(limit);
    // The mail is sent after answering: give the rest time to (not) come.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(w.settled_mail().len(), limit);
}

/// Item 22: ended sessions and used or expired links are purged by the
/// store's scheduler (they were kept for ever, a row per log-in).
#[test]
fn ended_sessions_and_used_links_are_purged_on_the_scheduler() {
    use mantissa_accounts::Ticket;
    use mantissa_store::Timestamp;
    use mantissa_web::SessionRecord;
    use std::time::Duration;

    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    w.accounts.schedule_upkeep().unwrap();
    w.accounts.schedule_upkeep().unwrap(); // at each start: still one
    let s = &w.server;
    let rows = || {
        s.site
            .store()
            .read_blocking(|r| -> mantissa_store::Result<_> {
                Ok((
                    r.query::<SessionRecord>().count()?,
                    r.query::<Ticket>().filter(Ticket::used.eq(true)).count()?,
                    r.query::<Ticket>().filter(Ticket::used.eq(false)).count()?,
                ))
            })
            .unwrap()
    };
    let mut v = Visitor::default();
    v.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    let mail = w.smtp.wait_for(1);
    let link = path_of(&link_in(&mail[0].data));
    v.submit(s, &link, &link, &[("password", "ann's new long password")]);
    let mut ann = logged_in(s, "ann", "ann's new long password");
    let (sessions, used, open) = rows();
    assert!(sessions >= 1 && used == 1 && open == 0, "{:?}", rows());
    // A new link, not used.
    v.submit(s, "/reset", "/reset", &[("email", "ann@example.org")]);
    w.smtp.wait_for(2);
    assert_eq!(rows().2, 1);

    // Two hours on: the used link is gone; the session (12 h) and the open
    // link (24 h) are kept.
    let now = Timestamp::now();
    s.site
        .run_due(now.plus(Duration::from_secs(2 * 3600)))
        .unwrap();
    let (sessions_then, used, open) = rows();
    assert_eq!((used, open), (0, 1));
    assert_eq!(sessions_then, sessions);
    assert_eq!(ann.get(s, "/private/settings").status, 200);
    // A day and more on: everything has ended, and is gone.
    s.site
        .run_due(now.plus(Duration::from_secs(25 * 3600)))
        .unwrap();
    assert_eq!(rows(), (0, 0, 0));
    assert_eq!(ann.get(s, "/private/settings").status, 303, "to log in");
}

/// Item 13: reset and sign-up mail after answering, so a known address
/// cannot be told from an unknown one by the answer; not even when the
/// mail server is down (a known address answered 500, an unknown 200).
#[test]
fn known_and_unknown_addresses_get_the_same_answers_even_when_mail_fails() {
    let w = world_without_mail(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let mut v = Visitor::default();
    let answers: Vec<(u16, Option<String>, String)> = ["ann@example.org", "nobody@example.org"]
        .iter()
        .map(|email| {
            let r = v.submit(s, "/reset", "/reset", &[("email", email)]);
            let to = r.header("location").map(str::to_string);
            (r.status, to, shown(&r.text()))
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 303);
    let answers: Vec<(u16, Option<String>, String)> = ["ann@example.org", "nobody@example.org"]
        .iter()
        .enumerate()
        .map(|(i, email)| {
            let r = v.submit(
                s,
                "/signup",
                "/signup",
                &[
                    ("username", &format!("newcomer{i}")),
                    ("email", email),
                    ("password", "a long password 1"),
                ],
            );
            let to = r.header("location").map(str::to_string);
            (r.status, to, shown(&r.text()).replace(email, "ADDRESS"))
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 303);
}

/// Item 4, for the settings page: an over-long new address is refused, and
/// not said back.
#[test]
fn an_over_long_new_address_is_refused_and_not_said_back() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    with_ann(&w);
    let s = &w.server;
    let mut ann = logged_in(s, "ann", ANN_PW);
    let huge = "b".repeat(500_000) + "@example.org";
    let r = ann.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[("email", &huge), ("password", ANN_PW)],
    );
    // The form again (422), saying why beside the field, without the
    // address.
    assert_eq!(r.status, 422, "{}", r.status);
    assert!(r.text().contains("too long") && r.body.len() < 100_000);
}
