//! API tokens: made and revoked by their user on the settings page, scoped,
//! and accepted by the JSON API in place of a session.

mod support;

use mantissa_testkit::*;
use support::world;

#[test]
fn tokens_open_the_api_within_their_scope_until_revoked() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut ann = Visitor::default();
    let r = ann.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "ann's long password")],
    );
    assert_eq!(r.status, 303);

    let make = |ann: &mut Visitor, name: &str, write: bool| {
        let mut fields = vec![("name", name)];
        if write {
            fields.push(("write", "1"));
        }
        let page = ann
            .submit(s, "/private/settings", "/private/settings/tokens", &fields)
            .text();
        page.split("id=\"new-token\" readonly value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let read = make(&mut ann, "phone", false);
    let write = make(&mut ann, "script", true);
    assert!(read.starts_with("mt_") && read != write);
    // The token is shown once; the page lists names only.
    let listed = ann.get(s, "/private/settings").text();
    assert!(
        listed.contains("phone (read)")
            && listed.contains("script (read,write)")
            && !listed.contains(&read)
    );

    let with = |token: &str, raw: &str| send_raw(s.addr, raw.replace("TOKEN", token).as_bytes());
    let get = "GET /api/private/notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\nConnection: close\r\n\r\n";
    let post = "POST /logout HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let r = with(&read, get);
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["notes"],
        serde_json::json!([])
    );
    let r = with(&read, post);
    assert_eq!(r.status, 403, "a read token cannot change things");
    assert!(r.text().contains("may only read"));
    assert_eq!(
        with(&write, post).status,
        303,
        "a write token can, without a CSRF token"
    );
    assert_eq!(with("mt_forged", get).status, 401);
    assert!(
        set_cookie(&with(&read, get), "mantissa_session").is_none(),
        "tokens make no cookies"
    );

    // Revoke the phone's token from the settings page.
    let page = ann.get(s, "/private/settings").text();
    let id = page
        .split("/private/settings/tokens/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // Its button leads to a page that asks first.
    let revoke = format!("/private/settings/tokens/{id}/revoke");
    let asked = ann.get(s, &revoke);
    assert_eq!(asked.status, 200);
    assert!(
        asked.text().contains("Revoke the token"),
        "{}",
        asked.text()
    );
    let r = ann.submit(s, &revoke, &revoke, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(ann.follow(s, &r).text().contains("The token was revoked"));
    assert_eq!(with(&read, get).status, 401);
    assert_eq!(with(&write, get).status, 200);
}
