//! The administrator's console, used through the browser's forms: its
//! sections, the user list and a user's page, actions that ask first and
//! can be undone, the audit log, the charts, and the mails it sends.

mod support;

use mantissa_testkit::*;
use support::{block_on, logged_in, world, world_with_outbox};

/// A mail's text as its reader sees it: lines longer than 77 characters
/// come quoted-printable, broken with soft line breaks.
fn read(data: &str) -> String {
    data.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

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
    let sections = [
        "/admin",
        "/admin/users",
        "/admin/users/root",
        "/admin/users/bob/delete",
        "/admin/signup",
        "/admin/offerings",
        "/admin/offerings/notes/off",
        "/admin/mail",
        "/admin/ports",
        "/admin/logs",
    ];
    let mut bob = logged_in(s, "bob", "bob's long password");
    for section in sections {
        assert_eq!(Visitor::default().get(s, section).status, 404, "{section}");
        assert_eq!(bob.get(s, section).status, 404, "{section}");
    }
    let r = bob.submit(s, "/private/settings", "/admin/users/root/suspend", &[]);
    assert_eq!(r.status, 404, "actions too");
    let mut root = logged_in(s, "root", "root's long password");
    for section in sections {
        let page = root.get(s, section);
        assert_eq!(page.status, 200, "{section}: {}", page.text());
        // Every section links to every other.
        let t = page.text();
        for link in [
            "/admin/users\"",
            "/admin/signup\"",
            "/admin/offerings\"",
            "/admin/mail\"",
            "/admin/ports\"",
            "/admin/logs\"",
        ] {
            assert!(
                t.contains(&format!("href=\"{link}")),
                "{section} links to {link}: {t}"
            );
        }
    }
    let page = root.get(s, "/admin");
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
    let found = root.get(s, "/admin/users?q=bo").text();
    assert!(
        found.contains("/admin/users/bob\">bob</a>")
            && !found.contains("/admin/users/root\">root</a>"),
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
    let r = root.submit(
        s,
        "/admin/signup",
        "/admin/signup",
        &[("mechanism", "approval")],
    );
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
    // Verified, and told that an administrator approves the account next,
    // on the page and by mail.
    assert!(
        dan.follow(s, &r)
            .text()
            .contains("An administrator will approve your account"),
        "{}",
        r.text()
    );
    let mail = w.smtp.wait_for(2);
    assert_eq!(mail.len(), 2);
    assert!(
        read(&mail[1].data).contains("is waiting for approval")
            && read(&mail[1].data).contains("Hello dan,"),
        "{}",
        mail[1].data
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
    assert!(
        root.get(s, "/admin/users?status=pending")
            .text()
            .contains(">dan</a>")
    );
    let r = root.submit(s, "/admin/users/dan", "/admin/users/dan/approve", &[]);
    assert_eq!(r.header("location"), Some("/admin/users/dan?done=approved"));
    assert!(
        shown(&root.get(s, r.header("location").unwrap()).text())
            .contains("Approved dan; they were emailed.")
    );
    let mail = w.smtp.wait_for(3);
    assert!(
        read(&mail[2].data).contains("was approved") && read(&mail[2].data).contains("/login"),
        "{}",
        mail[2].data
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
    // Suspending asks first: the user's page links to a page that says
    // what will happen, whose button does it.
    let page = root.get(s, "/admin/users/eve").text();
    assert!(page.contains("href=\"/admin/users/eve/suspend\""), "{page}");
    let ask = shown(&root.get(s, "/admin/users/eve/suspend").text());
    assert!(
        ask.contains("Suspend eve?") && ask.contains("Cancel"),
        "{ask}"
    );
    let r = root.submit(
        s,
        "/admin/users/eve/suspend",
        "/admin/users/eve/suspend",
        &[],
    );
    assert_eq!(
        r.header("location"),
        Some("/admin/users/eve?done=suspended")
    );
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
    // The message after suspending has an Undo button.
    let after = root.get(s, "/admin/users/eve?done=suspended").text();
    assert!(
        after.contains("action=\"/admin/users/eve/unsuspend\"")
            && shown(&after).contains("Undo: let eve log in again"),
        "{after}"
    );
    let r = root.submit(
        s,
        "/admin/users/eve?done=suspended",
        "/admin/users/eve/unsuspend",
        &[],
    );
    assert!(
        shown(&root.get(s, r.header("location").unwrap()).text()).contains("eve can log in again.")
    );
    logged_in(s, "eve", "eve's long password");

    let ask = shown(&root.get(s, "/admin/users/eve/delete").text());
    assert!(
        ask.contains("Delete eve?") && ask.contains("cannot be undone"),
        "{ask}"
    );
    let r = root.submit(s, "/admin/users/eve/delete", "/admin/users/eve/delete", &[]);
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
    assert_eq!(root.get(s, "/admin/users/eve").status, 404, "eve is gone");
    assert!(
        !root
            .get(s, "/admin/users/root")
            .text()
            .contains("/admin/users/root/delete"),
        "no button to delete oneself"
    );
    let r = root.submit(s, "/admin/users", "/admin/users/root/delete", &[]);
    assert_eq!(r.status, 409);
    assert!(
        r.text().contains("You cannot delete yourself."),
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
        "/admin/users",
        "/admin/users",
        &[("username", "fay"), ("email", "fay@example.org")],
    );
    assert_eq!(r.header("location"), Some("/admin/users/fay?done=created"));
    let notice = shown(&root.get(s, r.header("location").unwrap()).text());
    assert!(
        notice.contains("Created fay; a link to set a password was emailed to fay@example.org."),
        "{notice}"
    );
    let r = root.submit(
        s,
        "/admin/users",
        "/admin/users",
        &[("username", "fay"), ("email", "other@example.org")],
    );
    // A name that is taken: a conflict, the form shown again with what was
    // typed and the words beside the name.
    assert_eq!(r.status, 409);
    let page = shown(&r.text());
    assert!(page.contains("The user name fay is taken"), "{page}");
    assert!(page.contains(r#"value="other@example.org""#), "{page}");
    assert!(
        page.contains(r#"aria-describedby="new-name-error""#),
        "{page}"
    );
    // An address that is not one: 422, the words beside the address.
    let r = root.submit(
        s,
        "/admin/users",
        "/admin/users",
        &[("username", "gus"), ("email", "not an address")],
    );
    assert_eq!(r.status, 422);
    let page = shown(&r.text());
    assert!(
        page.contains(r#"aria-describedby="new-email-error""#),
        "{page}"
    );
    assert!(page.contains(r#"value="gus""#), "{page}");
    let mail = w.smtp.wait_for(1);
    // A welcome that names her and the site, not a password reset.
    let site_name = mantissa_web::SiteConfig::load_or_init(&s.site)
        .unwrap()
        .name;
    assert!(
        mail[0]
            .data
            .contains(&format!("Subject: Welcome to {site_name}, fay")),
        "{}",
        mail[0].data
    );
    assert!(
        read(&mail[0].data).contains("your user name is fay")
            && !mail[0].data.contains("Resetting"),
        "{}",
        mail[0].data
    );
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
    for page in [
        "/admin",
        "/admin/users",
        "/admin/users/bob",
        "/admin/signup",
        "/admin/offerings",
    ] {
        for query in [
            "notice=Your%20site%20was%20hacked%2C%20call%20555-0100",
            "done=Your%20site%20was%20hacked%2C%20call%20555-0100",
            "done=suspended&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
            "done=offering-on&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
            "done=offering-off&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
            "done=product-saved&to=Your%20site%20was%20hacked%2C%20call%20555-0100",
        ] {
            let r = root.get(s, &format!("{page}?{query}"));
            assert_eq!(r.status, 200, "{page}?{query}");
            let text = shown(&r.text());
            assert!(!text.contains(spoof), "{page}?{query}: {text}");
            // A user's page names its own user, whatever `to` says; the
            // other pages show nothing for a name they do not know.
            if page != "/admin/users/bob" {
                assert!(!text.contains("role=\"status\""), "{page}?{query}: {text}");
            }
        }
    }
    // A real action's message still says what happened, by its key.
    let r = root.submit(s, "/admin/users", "/admin/users/bob/suspend", &[]);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(location, "/admin/users/bob?done=suspended");
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
    let console = root.get(s, "/admin/offerings").text();
    assert!(
        !console.contains("/admin/offerings/settings/off"),
        "{console}"
    );
    assert!(console.contains("/admin/offerings/notes/off"), "{console}");
    let r = root.submit(s, "/admin/users", "/admin/offerings/settings/off", &[]);
    assert_eq!(r.status, 409);
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
    assert!(root.get(s, "/admin").text().contains("120 users"));
    let first = root.get(s, "/admin/users").text();
    assert!(first.contains("Page 1 of 3 (120 users)"), "{first}");
    assert!(first.contains(">root</a> (admin)</td>") && first.contains(">user048</a>"));
    assert!(!first.contains(">user049</a>"), "the 51st is on page 2");
    assert!(
        first.contains("href=\"/admin/users?q=&amp;status=&amp;sort=name&amp;page=2\">Next</a>"),
        "{first}"
    );
    let last = root.get(s, "/admin/users?page=3").text();
    assert!(last.contains(">user099</a>") && last.contains(">user118</a>"));
    assert!(!last.contains(">user098</a>") && !last.contains(">Next</a>"));
    assert!(
        last.contains("href=\"/admin/users?q=&amp;status=&amp;sort=name&amp;page=2\">Previous</a>")
    );

    // A search is paged too, and its links keep it.
    let found = root.get(s, "/admin/users?q=user1").text();
    assert!(
        found.contains(">user118</a>") && !found.contains(">user099</a>"),
        "{found}"
    );
    assert!(
        !found.contains("Page 1 of"),
        "19 users fit on one page: no pager"
    );
    let found = root.get(s, "/admin/users?q=user0&page=2").text();
    assert!(found.contains("Page 2 of 2 (100 users)"), "{found}");
    assert!(found.contains(
        "href=\"/admin/users?q=user0&amp;status=&amp;sort=name&amp;page=1\">Previous</a>"
    ));

    // The JSON twin holds one page, not the whole list.
    let api = root.get(s, "/api/admin/users?page=2");
    assert_eq!(api.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(json["users"].as_array().unwrap().len(), 50, "{json}");
    assert_eq!(json["pager"]["pages"], 3);
    // Nonsense page numbers give the first page, not an error.
    assert_eq!(root.get(s, "/admin/users?page=zero").status, 200);
}

/// Issue 14, item 11: the user list filters by status, sorts several
/// ways, searches with a button, and says when nothing matched.
#[test]
fn the_user_list_filters_sorts_and_says_when_nothing_is_found() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    for name in ["amy", "cat", "bea"] {
        w.accounts
            .create_user(name, Some(&format!("{name}@example.org")), None, false)
            .unwrap();
    }
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    root.submit(s, "/admin/users", "/admin/users/cat/suspend", &[]);
    let page = root.get(s, "/admin/users").text();
    assert!(
        page.contains("<button type=\"submit\">Search</button>"),
        "{page}"
    );
    let order = |page: &str| {
        ["amy", "bea", "cat", "root"]
            .into_iter()
            .filter_map(|n| {
                page.find(&format!("/admin/users/{n}\">{n}</a>"))
                    .map(|i| (i, n))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&page), ["amy", "bea", "cat", "root"]);
    let page = root.get(s, "/admin/users?sort=name-desc").text();
    assert_eq!(order(&page), ["root", "cat", "bea", "amy"]);
    let page = root.get(s, "/admin/users?sort=newest").text();
    assert_eq!(order(&page), ["bea", "cat", "amy", "root"]);
    let page = root.get(s, "/admin/users?status=suspended").text();
    assert_eq!(order(&page), ["cat"]);
    assert!(shown(&page).contains("Suspended"), "{page}");
    let page = root.get(s, "/admin/users?status=admin").text();
    assert_eq!(order(&page), ["root"]);
    // A search by address, within a filter.
    let page = root
        .get(s, "/admin/users?q=bea%40example&status=active")
        .text();
    assert_eq!(order(&page), ["bea"]);
    let page = shown(&root.get(s, "/admin/users?q=nobody").text());
    assert!(page.contains("Nothing found for “nobody”."), "{page}");
    assert!(page.contains("Show everyone"), "{page}");
    let page = shown(&root.get(s, "/admin/users?status=pending").text());
    assert!(page.contains("Nothing found."), "{page}");
    // Unknown filters and orders show everyone, by name.
    let page = root.get(s, "/admin/users?status=x&sort=y").text();
    assert_eq!(order(&page), ["amy", "bea", "cat", "root"]);
}

/// Issue 14, item 11: a user's page shows their account, store, sessions,
/// passkeys and last log-in, with dates relative and exact.
#[test]
fn a_users_page_shows_their_account_store_sessions_and_actions() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user(
            "gil",
            Some("gil@example.org"),
            Some("gil's long password"),
            false,
        )
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let page = shown(&root.get(s, "/admin/users/gil").text());
    assert!(page.contains("Last log-in</dt><dd>None recorded"), "{page}");
    assert!(
        page.contains("No sessions.") && page.contains("No passkeys."),
        "{page}"
    );
    logged_in(s, "gil", "gil's long password");
    let raw = root.get(s, "/admin/users/gil").text();
    let page = shown(&raw);
    assert!(page.contains("<h1>gil</h1>"), "{page}");
    assert!(page.contains("gil@example.org"), "{page}");
    assert!(page.contains("Status</dt><dd>Active"), "{page}");
    assert!(page.contains("Joined</dt><dd><time datetime=\""), "{page}");
    assert!(
        page.contains("just now</time>, created by an administrator"),
        "{page}"
    );
    assert!(page.contains("Last log-in</dt><dd><time"), "{page}");
    assert!(
        page.contains(" UTC\">just now</time>"),
        "exact time on hover: {page}"
    );
    assert!(page.contains("Began <time"), "a session: {page}");
    // An empty SQLite file is a few KB; on PostgreSQL a store's size is
    // that of its rows.
    let size = if mantissa_store::testing::on_postgres() {
        " bytes <code>PostgreSQL, store "
    } else {
        " KB <code>/"
    };
    assert!(page.contains(size), "the store's size: {page}");
    for action in ["suspend", "delete"] {
        assert!(
            raw.contains(&format!("href=\"/admin/users/gil/{action}\"")),
            "{action} asks first: {raw}"
        );
    }
    assert!(raw.contains("action=\"/admin/users/gil/reset\""), "{raw}");
    assert_eq!(root.get(s, "/admin/users/nobody").status, 404);
    assert_eq!(root.get(s, "/admin/users/gil/frobnicate").status, 404);
}

/// Issue 14, items 4 and 11: switching an offering off asks first, can be
/// undone, and every administrative action lands in the audit log.
#[test]
fn switching_off_asks_first_can_be_undone_and_is_logged() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user("hal", None, Some("hal's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let ask = shown(&root.get(s, "/admin/offerings/notes/off").text());
    assert!(ask.contains("Switch notes off?"), "{ask}");
    let r = root.submit(
        s,
        "/admin/offerings/notes/off",
        "/admin/offerings/notes/off",
        &[],
    );
    assert_eq!(
        r.header("location"),
        Some("/admin/offerings?done=offering-off&to=notes")
    );
    let after = root.get(s, r.header("location").unwrap()).text();
    assert!(shown(&after).contains("notes is now off."), "{after}");
    assert!(
        after.contains("action=\"/admin/offerings/notes/on\""),
        "{after}"
    );
    let r = root.submit(
        s,
        r.header("location").unwrap(),
        "/admin/offerings/notes/on",
        &[],
    );
    assert!(shown(&root.get(s, r.header("location").unwrap()).text()).contains("notes is now on."));

    root.submit(s, "/admin/users", "/admin/users/hal/suspend", &[]);
    root.submit(
        s,
        "/admin/signup",
        "/admin/signup",
        &[("mechanism", "closed")],
    );
    let log = shown(&root.get(s, "/admin/logs").text());
    let lines: Vec<&str> = [
        "Set sign-up to closed",
        "Suspended hal",
        "Switched on notes",
        "Switched off notes",
    ]
    .into_iter()
    .filter(|l| log.contains(l))
    .collect();
    assert_eq!(lines.len(), 4, "{log}");
    // Newest first, each with who did it and when.
    assert!(
        log.find("Set sign-up to closed") < log.find("Switched off notes"),
        "{log}"
    );
    assert!(
        log.contains("<td>root</td>") && log.contains("just now</time>"),
        "{log}"
    );
    // A refused action changes nothing and is not logged.
    assert_eq!(
        root.submit(s, "/admin/users", "/admin/users/root/suspend", &[])
            .status,
        409
    );
    assert!(!shown(&root.get(s, "/admin/logs").text()).contains("Suspended root"));
}

/// Issue 14, item 11: the overview charts requests, sign-ups, failed
/// log-ins and errors over the last hour, day and month, as SVG drawn by
/// the server.
#[test]
fn the_overview_charts_the_sites_activity() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut visitor = Visitor::default();
    let r = visitor.submit(
        s,
        "/login",
        "/login",
        &[("who", "root"), ("password", "not the password")],
    );
    assert_eq!(r.status, 401);
    visitor.submit(
        s,
        "/signup",
        "/signup",
        &[
            ("username", "ivy"),
            ("email", "ivy@example.org"),
            ("password", "ivy's long password"),
        ],
    );
    let mut root = logged_in(s, "root", "root's long password");
    let page = shown(&root.get(s, "/admin").text());
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 4, "{page}");
    assert!(page.contains("Sign-ups: 1 sign-up"), "{page}");
    assert!(page.contains("Failed log-ins: 1 failed log-in"), "{page}");
    assert!(page.contains("Server errors: 0 server errors"), "{page}");
    let requests: i64 = page
        .split("Requests: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(requests >= 5, "{requests} requests: {page}");
    assert!(
        page.contains("<title>1 failed log-in, "),
        "a bar's tooltip: {page}"
    );
    assert!(!page.contains("<script"), "no script: {page}");
    let day = root.get(s, "/admin?period=day").text();
    assert!(day.contains("<strong>Last day</strong>"), "{day}");
    assert!(day.contains("Sign-ups: 1 sign-up"), "{day}");
    let month = root.get(s, "/admin?period=month").text();
    let svg = month.split("<svg").nth(1).unwrap();
    assert_eq!(
        svg.split("</svg>").next().unwrap().matches("<rect").count(),
        30
    );
}

/// Issue 14, item 6: a change of email address is announced to the old
/// address too, and a theme can rewrite any mail.
#[test]
fn mails_go_to_the_old_address_and_themes_can_rewrite_them() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user(
            "jo",
            Some("jo@old.example"),
            Some("jo's long password"),
            false,
        )
        .unwrap();
    let s = &w.server;
    let mut jo = logged_in(s, "jo", "jo's long password");
    jo.submit(
        s,
        "/private/settings",
        "/private/settings/email",
        &[
            ("email", "jo@new.example"),
            ("password", "jo's long password"),
        ],
    );
    let mail = w.smtp.wait_for(1);
    let link = path_of(&link_in(&mail[0].data));
    jo.submit(s, &link, &link, &[]);
    let mail = w.smtp.wait_for(2);
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[1].to, ["jo@old.example"]);
    assert!(
        read(&mail[1].data).contains("was changed from jo@old.example to jo@new.example"),
        "{}",
        mail[1].data
    );

    // A theme's own welcome mail.
    let mut config = mantissa_web::SiteConfig::load_or_init(&s.site).unwrap();
    config.theme = Some("ours".into());
    mantissa_web::SiteConfig::save(&s.site, config).unwrap();
    let dir = s.site.root().join("themes/ours/templates/mail");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("welcome.txt"),
        "Subject: Come in, {{ username }}\n\nPick a password: {{ link }}\n",
    )
    .unwrap();
    let mut root = logged_in(s, "root", "root's long password");
    let mail_page = shown(&root.get(s, "/admin/mail").text());
    assert!(
        mail_page.contains("mail/welcome.txt</code>: the theme's own"),
        "{mail_page}"
    );
    root.submit(
        s,
        "/admin/users",
        "/admin/users",
        &[("username", "kim"), ("email", "kim@example.org")],
    );
    let mail = w.smtp.wait_for(3);
    assert!(
        mail[2].data.contains("Subject: Come in, kim"),
        "{}",
        mail[2].data
    );
    assert!(
        mail[2].data.contains("Pick a password: http://"),
        "{}",
        mail[2].data
    );
}

/// The id of the queued message to `to`.
fn queued_to(w: &support::World, to: &str) -> i64 {
    block_on(mantissa_mail::admin::list(&w.server.site, true))
        .unwrap()
        .iter()
        .find(|m| m.recipient_list() == [to])
        .unwrap_or_else(|| panic!("no message to {to} in the queue"))
        .id()
        .id()
}

/// The part of the mail section between the headings `from` and `to`.
fn part<'a>(page: &'a str, from: &str, to: &str) -> &'a str {
    let start = page
        .find(from)
        .unwrap_or_else(|| panic!("no {from}: {page}"));
    let rest = &page[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

/// Issue 16, item 5: the console shows the mail queue and the delivery
/// history; an administrator retries a failed message (and all of them)
/// and drops one, each ending on the section with what was done.
#[test]
fn the_mail_queue_is_shown_retried_and_dropped_in_the_console() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user("bob", None, Some("bob's long password"), false)
        .unwrap();
    for name in ["ann", "cy", "dan"] {
        w.accounts
            .create_user(
                name,
                Some(&format!("{name}@example.org")),
                Some("a long password"),
                false,
            )
            .unwrap();
    }
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let page = shown(&root.get(s, "/admin/mail").text());
    assert!(page.contains("The queue is empty"), "{page}");
    assert!(!page.contains("outbox folder"), "{page}");

    // The relay refuses the three reset mails for good.
    w.smtp.answer_next([550, 550, 550]);
    for name in ["ann", "cy", "dan"] {
        let user = format!("/admin/users/{name}");
        let r = root.submit(s, &user, &format!("{user}/reset"), &[]);
        assert_eq!(r.status, 303, "{}", r.text());
    }
    // Each mail is queued after its page's answer (so that answers take
    // as long whoever asks): wait for the three refusals, not only for an
    // empty queue, which the last mail may not have reached yet.
    let start = std::time::Instant::now();
    while w.smtp.refused() < 3 && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w.settled_mail();
    assert_eq!(w.smtp.refused(), 3);
    let (ann, cy, dan) = (
        queued_to(&w, "ann@example.org"),
        queued_to(&w, "cy@example.org"),
        queued_to(&w, "dan@example.org"),
    );
    let raw = root.get(s, "/admin/mail").text();
    let page = shown(&raw);
    let waiting = part(&page, "Outgoing mail", "Delivered");
    for to in ["ann@example.org", "cy@example.org", "dan@example.org"] {
        assert!(waiting.contains(to), "{to}: {waiting}");
    }
    assert_eq!(
        waiting.matches("550 refused as told").count(),
        3,
        "{waiting}"
    );
    assert!(
        waiting.contains("3 messages not delivered yet")
            && waiting.contains("Resetting your password")
            && waiting.contains("Failed"),
        "{waiting}"
    );
    assert!(
        raw.contains(&format!("action=\"/admin/mail/{ann}/retry\""))
            && raw.contains(&format!("href=\"/admin/mail/{cy}/drop\"")),
        "{raw}"
    );
    assert!(part(&page, "Delivered", "</main>").contains("None in the last 30 days"));

    // Neither someone else nor a form from elsewhere can touch it.
    let mut bob = logged_in(s, "bob", "bob's long password");
    assert_eq!(bob.get(s, "/admin/mail").status, 404);
    for action in [
        format!("/admin/mail/{ann}/retry"),
        format!("/admin/mail/{ann}/drop"),
        "/admin/mail/retry".to_string(),
    ] {
        assert_eq!(
            bob.submit(s, "/private/settings", &action, &[]).status,
            404,
            "{action}"
        );
        // The administrator's own session, without the form's token.
        assert_eq!(root.post(s, &action, "").status, 403, "{action}");
    }
    let still = block_on(mantissa_mail::admin::list(&s.site, false)).unwrap();
    assert_eq!(still.len(), 3);
    assert!(
        still
            .iter()
            .all(|m| m.mail_state() == mantissa_mail::MailState::Failed)
    );

    // Retry one: it is delivered.
    let r = root.submit(s, "/admin/mail", &format!("/admin/mail/{ann}/retry"), &[]);
    assert_eq!(
        r.header("location"),
        Some(format!("/admin/mail?done=mail-retried&to={ann}").as_str())
    );
    let said = shown(&root.follow(s, &r).text());
    assert!(
        said.contains("The message to ann@example.org will be tried again now.")
            || said.contains("The message to ann@example.org was tried again and delivered."),
        "{said}"
    );
    let got = w.smtp.wait_for(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["ann@example.org"]);
    w.settled_mail();
    let page = shown(&root.get(s, "/admin/mail").text());
    let delivered = part(&page, "Delivered", "</main>");
    assert!(
        delivered.contains("ann@example.org") && delivered.contains("Resetting your password"),
        "{delivered}"
    );
    let waiting = part(&page, "Outgoing mail", "Delivered");
    assert!(!waiting.contains("ann@example.org"), "{waiting}");
    // Said of the message as it is now.
    let said = shown(
        &root
            .get(s, &format!("/admin/mail?done=mail-retried&to={ann}"))
            .text(),
    );
    assert!(
        said.contains("The message to ann@example.org was tried again and delivered."),
        "{said}"
    );
    // Delivered: retrying would send it twice.
    let r = root.submit(s, "/admin/mail", &format!("/admin/mail/{ann}/retry"), &[]);
    assert_eq!(r.status, 409);
    assert!(
        shown(&r.text()).contains(&format!(
            "Message {ann} was delivered already: retrying it would send it twice."
        )),
        "{}",
        r.text()
    );

    // Dropping asks first.
    let ask = shown(&root.get(s, &format!("/admin/mail/{cy}/drop")).text());
    assert!(
        ask.contains("Drop the message to cy@example.org?") && ask.contains("Cancel"),
        "{ask}"
    );
    let r = root.submit(
        s,
        &format!("/admin/mail/{cy}/drop"),
        &format!("/admin/mail/{cy}/drop"),
        &[],
    );
    assert_eq!(
        r.header("location"),
        Some(format!("/admin/mail?done=mail-dropped&to={cy}").as_str())
    );
    let page = shown(&root.follow(s, &r).text());
    assert!(
        page.contains("Dropped the message; it will not be sent."),
        "{page}"
    );
    assert!(!page.contains("cy@example.org"), "{page}");
    assert_eq!(root.get(s, &format!("/admin/mail/{cy}/drop")).status, 404);
    assert_eq!(
        root.submit(s, "/admin/mail", &format!("/admin/mail/{cy}/retry"), &[])
            .status,
        404
    );

    // Retry all: dan's goes.
    let r = root.submit(s, "/admin/mail", "/admin/mail/retry", &[]);
    assert_eq!(
        r.header("location"),
        Some("/admin/mail?done=mail-retried-all&to=")
    );
    assert!(
        shown(&root.follow(s, &r).text())
            .contains("Every waiting and failed message will be tried again now.")
    );
    let got = w.smtp.wait_for(2);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].to, ["dan@example.org"]);
    w.settled_mail();
    let sent = block_on(mantissa_mail::admin::message(&s.site, dan))
        .unwrap()
        .unwrap();
    assert_eq!(sent.mail_state(), mantissa_mail::MailState::Delivered);
    assert_eq!(sent.attempts, 2);
    let page = shown(&root.get(s, "/admin/mail").text());
    assert!(page.contains("The queue is empty"), "{page}");
    let delivered = part(&page, "Delivered", "</main>");
    assert!(
        delivered.contains("ann@example.org") && delivered.contains("dan@example.org"),
        "{delivered}"
    );
    // Each action is in the audit log.
    let log = shown(&root.get(s, "/admin/logs").text());
    for line in [
        format!("Asked for another try of queued mail message {ann}"),
        format!("Dropped queued mail message {cy}"),
        "Asked for another try of all waiting and failed mail".to_string(),
    ] {
        assert!(log.contains(&line), "{line}: {log}");
    }
    // Text from the URL is never shown: an id not in the queue says nothing.
    let page = shown(
        &root
            .get(s, "/admin/mail?done=mail-retried&to=999999")
            .text(),
    );
    assert!(!page.contains("tried again"), "{page}");
}

/// Issue 16, item 5: a site without a relay writes its mail to the outbox
/// folder, and the console says so.
#[test]
fn without_a_relay_the_mail_section_names_the_outbox() {
    let w = world_with_outbox(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    let page = shown(&root.get(s, "/admin/mail").text());
    let outbox = s.site.root().join("outbox");
    assert!(
        page.contains(&format!(
            "mail goes to the outbox folder <code>{}</code>",
            outbox.display()
        )),
        "{page}"
    );
    assert!(page.contains("The queue is empty"), "{page}");
}
