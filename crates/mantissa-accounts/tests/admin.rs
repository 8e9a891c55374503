//! The administrator's console, used through the browser's forms.

mod support;

use mantissa_testkit::*;
use support::{logged_in, world};

#[test]
fn only_administrators_see_the_console() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user("bob", None, Some("bob's long password"), false)
        .unwrap();
    let s = &w.server;
    assert_eq!(Visitor::default().get(s, "/admin").status, 404);
    let mut bob = logged_in(s, "bob", "bob's long password");
    assert_eq!(bob.get(s, "/admin").status, 404);
    let r = bob.submit(s, "/private/settings", "/admin/users/root/suspend", &[]);
    assert_eq!(r.status, 404, "actions too");
    let mut root = logged_in(s, "root", "root's long password");
    let page = root.get(s, "/admin");
    assert_eq!(page.status, 200, "{}", page.text());
    let t = page.text();
    assert!(
        t.contains("2 users, 2 stores") && t.contains("requests in the last minute"),
        "{t}"
    );
    // Sizes in KB or MB, of the site's stores only (not bytes of whatever
    // else the site's folder holds), and no "1 users".
    assert!(
        t.contains(" KB on disk") || t.contains(" MB on disk"),
        "{t}"
    );
    assert!(t.contains("0 sign-ups waiting for approval"), "{t}");
    let found = root.get(s, "/admin?q=bo").text();
    assert!(
        found.contains("<td>bob</td>") && !found.contains("<td>root"),
        "{found}"
    );
    w.accounts.delete_user("bob").unwrap();
    let t = root.get(s, "/admin").text();
    assert!(t.contains("1 user, 1 store,"), "{t}");
}

#[test]
fn sign_ups_are_reviewed_and_users_suspended_or_deleted() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let r = root.submit(s, "/admin", "/admin/signup", &[("mechanism", "approval")]);
    assert_eq!(r.status, 303);
    assert!(
        root.get(s, r.header("location").unwrap())
            .text()
            .contains("Sign-up is now approval.")
    );

    let mut dan = Visitor::default();
    let r = dan.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "dan"),
            ("email", "dan@example.org"),
            ("password", "dan's long password"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let verify = path_of(&link_in(&w.smtp.wait_for(1)[0].data));
    let r = dan.submit(s, &verify, &verify, &[]);
    // Verified, and told that an administrator approves the account next.
    assert!(
        dan.follow(s, &r)
            .text()
            .contains("An administrator will approve your account"),
        "{}",
        r.text()
    );
    let r = dan.submit(
        s,
        "/login",
        "/login",
        &[("who", "dan"), ("password", "dan's long password")],
    );
    assert!(
        r.text().contains("waiting for an administrator"),
        "{}",
        r.text()
    );
    assert!(root.get(s, "/admin").text().contains("1 sign-up waiting"));
    let r = root.submit(s, "/admin", "/admin/users/dan/approve", &[]);
    assert!(
        root.get(s, r.header("location").unwrap())
            .text()
            .contains("Approved dan.")
    );
    // Dan verified his address while waiting: approval is all it takes.
    let r = dan.submit(
        s,
        "/login",
        "/login",
        &[("who", "dan"), ("password", "dan's long password")],
    );
    assert_eq!(r.status, 303, "{}", r.text());

    w.accounts
        .create_user(
            "eve",
            Some("eve@example.org"),
            Some("eve's long password"),
            false,
        )
        .unwrap();
    let mut eve = logged_in(s, "eve", "eve's long password");
    root.submit(s, "/admin", "/admin/users/eve/suspend", &[]);
    assert_eq!(
        eve.get(s, "/private/settings").status,
        303,
        "suspension ends her sessions"
    );
    let r = eve.submit(
        s,
        "/login",
        "/login",
        &[("who", "eve"), ("password", "eve's long password")],
    );
    assert!(r.text().contains("this account is suspended"));
    root.submit(s, "/admin", "/admin/users/eve/unsuspend", &[]);
    logged_in(s, "eve", "eve's long password");

    let r = root.submit(s, "/admin", "/admin/users/eve/delete", &[]);
    let notice = shown(&root.get(s, r.header("location").unwrap()).text());
    assert!(
        notice.contains(
            "Deleted the account; its store was exported first to the site's exports folder."
        ),
        "{notice}"
    );
    assert!(!s.site.has_user_store("eve").unwrap());
    let exports: Vec<_> = std::fs::read_dir(s.site.root().join("exports"))
        .unwrap()
        .collect();
    assert_eq!(exports.len(), 1);
    let r = eve.submit(
        s,
        "/login",
        "/login",
        &[("who", "eve"), ("password", "eve's long password")],
    );
    assert_eq!(r.status, 401);
    assert!(
        !root
            .get(s, "/admin")
            .text()
            .contains("/admin/users/root/delete"),
        "no button to delete oneself"
    );
    let r = root.submit(s, "/admin", "/admin/users/root/delete", &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("you cannot delete yourself"),
        "{}",
        r.text()
    );
}

#[test]
fn administrators_create_accounts_that_set_their_own_password() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let r = root.submit(
        s,
        "/admin",
        "/admin/users",
        &[("username", "fay"), ("email", "fay@example.org")],
    );
    let notice = shown(&root.get(s, r.header("location").unwrap()).text());
    assert!(
        notice.contains("Created fay; a link to set a password was emailed to fay@example.org."),
        "{notice}"
    );
    let r = root.submit(
        s,
        "/admin",
        "/admin/users",
        &[("username", "fay"), ("email", "other@example.org")],
    );
    assert_eq!(r.status, 400);
    assert!(shown(&r.text()).contains("there is already a user called"));
    let mail = w.smtp.wait_for(1);
    let link = path_of(&link_in(&mail[0].data));
    let mut fay = Visitor::default();
    let r = fay.submit(s, &link, &link, &[("password", "fay's own long password")]);
    // Post, redirect, get: the log-in page says what happened.
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        fay.follow(s, &r)
            .text()
            .contains("Your new password is set")
    );
    logged_in(s, "fay", "fay's own long password");
}

/// Issue 13, item 16: `/admin?notice=ANY TEXT` showed the text as the
/// console's status message (content spoofing: a link to the real console
/// saying whatever its author liked). Messages now come from a fixed list,
/// keyed in the query, and name only what the console knows.
#[test]
fn the_consoles_messages_come_from_a_fixed_list_never_from_the_url() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user("bob", None, Some("bob's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let spoof = "Your site was hacked, call 555-0100";
    for query in [
        "notice=Your%20site%20was%20hacked%2C%20call%20555-0100",
        "done=Your%20site%20was%20hacked%2C%20call%20555-0100",
        "done=suspended&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
        "done=offering-on&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
        "done=product-saved&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
    ] {
        let page = root.get(s, &format!("/admin?{query}"));
        assert_eq!(page.status, 200, "{query}");
        let text = shown(&page.text());
        assert!(!text.contains(spoof), "{query}: {text}");
        assert!(!text.contains("role=\"status\""), "{query}: {text}");
    }
    // A real action's message still says what happened, by its key.
    let r = root.submit(s, "/admin", "/admin/users/bob/suspend", &[]);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(location, "/admin?done=suspended&to=bob");
    assert!(
        shown(&root.get(s, &location).text())
            .contains("Suspended bob; their API tokens are revoked.")
    );
}

/// Issue 13, item 23: turning off the settings offering in /admin was
/// allowed, and then every log-in landed on a 404. Core offerings have no
/// switch, a forged one is refused with its reason, and a site where one
/// was switched off before still serves it.
#[test]
fn the_settings_cannot_be_switched_off() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let console = root.get(s, "/admin").text();
    assert!(
        !console.contains("/admin/offerings/settings/off"),
        "{console}"
    );
    assert!(console.contains("/admin/offerings/notes/off"), "{console}");
    let r = root.submit(s, "/admin", "/admin/offerings/settings/off", &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("cannot be switched off"), "{}", r.text());
    assert_eq!(root.get(s, "/private/settings").status, 200);

    // Switched off by the code before this fix: served all the same.
    mantissa_web::set_offering_enabled(&s.site, "settings", false).unwrap();
    let mut again = logged_in(s, "root", "root's long password");
    assert_eq!(again.get(s, "/private/settings").status, 200);
}

/// The user list comes a page of 50 at a time, in the console and in its
/// JSON, with links between the pages that keep the search.
#[test]
fn the_user_list_comes_in_pages() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    for i in 0..119 {
        w.accounts
            .create_user(&format!("user{i:03}"), None, None, false)
            .unwrap();
    }
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let first = root.get(s, "/admin").text();
    assert!(first.contains("120 users"), "{first}");
    assert!(first.contains("Page 1 of 3 (120 users)"), "{first}");
    assert!(first.contains("<td>root (admin)</td>") && first.contains("<td>user048</td>"));
    assert!(!first.contains("<td>user049</td>"), "the 51st is on page 2");
    assert!(
        first.contains("href=\"/admin?q=&amp;page=2\">Next</a>"),
        "{first}"
    );
    let last = root.get(s, "/admin?page=3").text();
    assert!(last.contains("<td>user099</td>") && last.contains("<td>user118</td>"));
    assert!(!last.contains("<td>user098</td>") && !last.contains(">Next</a>"));
    assert!(last.contains("href=\"/admin?q=&amp;page=2\">Previous</a>"));

    // A search is paged too, and its links keep it.
    let found = root.get(s, "/admin?q=user1").text();
    assert!(
        found.contains("<td>user118</td>") && !found.contains("<td>user099</td>"),
        "{found}"
    );
    assert!(
        !found.contains("Page 1 of"),
        "19 users fit on one page: no pager"
    );
    let found = root.get(s, "/admin?q=user0&page=2").text();
    assert!(found.contains("Page 2 of 2 (100 users)"), "{found}");
    assert!(found.contains("href=\"/admin?q=user0&amp;page=1\">Previous</a>"));

    // The JSON twin holds one page, not the whole list.
    let api = root.get(s, "/api/admin?page=2");
    assert_eq!(api.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(json["users"].as_array().unwrap().len(), 50, "{json}");
    assert_eq!(json["pager"]["pages"], 3);
    // Nonsense page numbers give the first page, not an error.
    assert_eq!(root.get(s, "/admin?page=zero").status, 200);
}
