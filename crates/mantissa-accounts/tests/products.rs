//! Products (what a new account gets installed in its store) and offerings
//! switched on and off site-wide, from the admin console.

mod support;

use mantissa_testkit::*;
use support::world;

fn notes(v: &mut Visitor, s: &TestServer) -> (u16, serde_json::Value) {
    let r = v.get(s, "/api/private/notes");
    let data = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, data["notes"].clone())
}

#[test]
fn products_and_offerings_are_chosen_in_the_console() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts.set_offerings(w.server.app.offerings());
    let s = &w.server;
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let mut root = Visitor::default();
    assert_eq!(
        root.submit(
            s,
            "/login",
            "/login",
            &[("who", "root"), ("password", "root's long password")]
        )
        .status,
        303
    );

    // By default a new account gets every offering: the notes offering
    // installs a welcome note.
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();
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
    assert_eq!(notes(&mut ann, s), (200, serde_json::json!(["Welcome"])));

    // Accounts made by an administrator now get only the settings.
    let r = root.submit(
        s,
        "/admin/signup",
        "/admin/products/created",
        &[("offering", "settings")],
    );
    assert_eq!(r.status, 303);
    let console = root.get(s, "/admin/signup").text();
    assert!(console.contains("Joined by created"), "{console}");
    w.accounts
        .create_user("bob", None, Some("bob's long password"), false)
        .unwrap();
    let mut bob = Visitor::default();
    assert_eq!(
        bob.submit(
            s,
            "/login",
            "/login",
            &[("who", "bob"), ("password", "bob's long password")]
        )
        .status,
        303
    );
    assert_eq!(notes(&mut bob, s), (200, serde_json::json!([])));

    // Notes switched off site-wide: its pages are gone, for everyone.
    let r = root.submit(s, "/admin/users", "/admin/offerings/notes/off", &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        root.get(s, r.header("location").unwrap())
            .text()
            .contains("notes is now off.")
    );
    assert_eq!(notes(&mut ann, s).0, 404);
    assert!(root.get(s, "/admin/offerings").text().contains("Switch on"));
    root.submit(s, "/admin/users", "/admin/offerings/notes/on", &[]);
    assert_eq!(notes(&mut ann, s).0, 200);
    assert_eq!(
        root.submit(s, "/admin/users", "/admin/offerings/nothing/off", &[])
            .status,
        404
    );
}
