//! Two-factor log-in: set up from the settings page with an authenticator
//! app's codes, then asked for at log-in; a code works once.

mod support;

use mantissa_testkit::*;
use support::world;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn log_in_with_totp() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut ann = Visitor::default();
    assert_eq!(
        ann.submit(
            s,
            "/login",
            "/login",
            &[("who", "ann"), ("password", "ann's long password")]
        )
        .status,
        303
    );

    let page = ann
        .submit(s, "/private/settings", "/private/settings/totp/begin", &[])
        .text();
    let secret = page
        .split("type the key <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(
        shown(&page).contains("otpauth://totp/Mantissa:ann?secret="),
        "{page}"
    );
    let wrong = ann.submit(
        s,
        "/private/settings",
        "/private/settings/totp/on",
        &[("code", "000000")],
    );
    assert_eq!(wrong.status, 422);
    let code = mantissa_accounts::totp::code_at(&secret, now()).unwrap();
    let on = ann.submit(
        s,
        "/private/settings",
        "/private/settings/totp/on",
        &[("code", &code)],
    );
    assert!(
        on.text().contains("Two-factor log-in is on."),
        "{}",
        on.text()
    );

    let mut phone = Visitor::default();
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "ann's long password")],
    );
    assert_eq!(r.status, 401);
    assert!(
        r.text()
            .contains("enter the 6-digit code from your authenticator app")
    );
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", "ann's long password"),
            ("code", "123456"),
        ],
    );
    assert_eq!(r.status, 401);
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", "wrong password!!"),
            ("code", &code),
        ],
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("wrong user name or password"));
    let next = mantissa_accounts::totp::code_at(&secret, now() + 30).unwrap();
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", "ann's long password"),
            ("code", &next),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let mut thief = Visitor::default();
    let r = thief.submit(
        s,
        "/login",
        "/login",
        &[
            ("who", "ann"),
            ("password", "ann's long password"),
            ("code", &next),
        ],
    );
    assert_eq!(r.status, 401, "a code works once");
}
