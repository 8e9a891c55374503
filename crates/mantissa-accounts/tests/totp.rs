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

    // Set-up begins with a POST, then shows the key and its QR code on
    // the settings page (POST-redirect-GET), naming the site as issuer.
    let begun = ann.submit(s, "/private/settings", "/private/settings/totp/begin", &[]);
    assert_eq!(begun.status, 303, "{}", begun.text());
    let page = ann.follow(s, &begun).text();
    assert!(page.contains("<svg"), "no QR code: {page}");
    let secret = page
        .split("Key: <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    // The issuer is the site (its folder's name, "site", until renamed),
    // not "Mantissa".
    assert!(
        shown(&page).contains("otpauth://totp/site:ann?secret=")
            && shown(&page).contains("issuer=site"),
        "{page}"
    );
    let wrong = ann.submit(
        s,
        "/private/settings",
        "/private/settings/totp/on",
        &[("code", "000000")],
    );
    assert_eq!(wrong.status, 422);
    // A mistyped code shows the same key again, and why beside the field.
    assert!(
        wrong
            .text()
            .contains(&format!("Key: <code>{secret}</code>"))
    );
    assert!(wrong.text().contains("id=\"totp-code-error\""));
    let code = mantissa_accounts::totp::code_at(&secret, now()).unwrap();
    let on = ann.submit(
        s,
        "/private/settings",
        "/private/settings/totp/on",
        &[("code", &code)],
    );
    assert_eq!(on.status, 303, "{}", on.text());
    let landed = ann.follow(s, &on);
    assert!(
        landed.text().contains("Two-factor log-in is on."),
        "{}",
        landed.text()
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

/// A set-up begun and not finished can be cancelled: the settings offer to
/// begin again, say what happened, and log-in asks for no code.
#[test]
fn a_begun_set_up_can_be_cancelled() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut ann = support::logged_in(s, "ann", "ann's long password");
    let begun = ann.submit(s, "/private/settings", "/private/settings/totp/begin", &[]);
    let page = ann.follow(s, &begun).text();
    assert!(page.contains("Cancel set-up"), "{page}");
    let r = ann.submit(s, "/private/settings", "/private/settings/totp/cancel", &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let page = ann.follow(s, &r).text();
    assert!(page.contains("Two-factor set-up was cancelled"), "{page}");
    assert!(page.contains("Set up two-factor log-in") && !page.contains("<svg"));
    support::logged_in(s, "ann", "ann's long password");
}
