//! The navigation every page has (issue 14, item 1), as the accounts
//! decide it: a user's applications, Settings, Admin for administrators,
//! Log out; Log in, and Sign up while sign-up is open, for visitors. And
//! the line that says what a form did (`?done=KEY`), which shows only the
//! site's own sentences.

mod support;

use mantissa_testkit::*;
use support::{logged_in, world};

/// The header of a page's HTML, its character references decoded.
fn header(html: &str) -> String {
    let start = html.find("<header").expect("a header");
    let end = html[start..].find("</header>").expect("its end") + start;
    shown(&html[start..end])
}

#[test]
fn the_header_links_to_what_each_person_may_use() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    let s = &w.server;
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();

    // A visitor: Log in; Sign up only while anyone may sign up.
    w.accounts.set_signup_mechanism("closed").unwrap();
    let mut visitor = Visitor::default();
    let page = visitor.get(s, "/").text();
    let nav = &header(&page);
    assert!(nav.contains("href=\"/login\">Log in"), "{nav}");
    assert!(!nav.contains("/signup"), "sign-up is closed: {nav}");
    w.accounts.set_signup_mechanism("open").unwrap();
    let page = visitor.get(s, "/").text();
    assert!(header(&page).contains("href=\"/signup\">Sign up"), "{page}");

    // A user: their application (the notes), Settings, Log out; no Admin.
    let mut ann = logged_in(s, "ann", "ann's long password");
    let page = ann.get(s, "/private/settings").text();
    let nav = &header(&page);
    assert!(nav.contains("href=\"/private/notes\">Notes"), "{nav}");
    assert!(nav.contains("href=\"/private/settings\""), "{nav}");
    assert!(nav.contains(">Log out</button>"), "{nav}");
    assert!(!nav.contains("/admin"), "{nav}");
    assert!(!nav.contains("/login"), "{nav}");
    // The page it is on is marked.
    assert!(
        nav.contains("href=\"/private/settings\" aria-current=\"page\""),
        "{nav}"
    );

    // An administrator also gets Admin.
    let mut root = logged_in(s, "root", "root's long password");
    let page = root.get(s, "/private/notes").text();
    assert!(header(&page).contains("href=\"/admin\""), "{page}");

    // An offering switched off for the site is no longer linked.
    mantissa_web::set_offering_enabled(&s.site, "notes", false).unwrap();
    let page = ann.get(s, "/private/settings").text();
    assert!(!header(&page).contains("/private/notes"), "{page}");
}

#[test]
fn a_done_key_shows_one_of_the_sites_own_sentences_and_nothing_else() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    let s = &w.server;
    let mut visitor = Visitor::default();
    let page = visitor.get(s, "/login?done=logged-out").text();
    assert!(
        page.contains("<p class=\"notice done\" role=\"status\">You have logged out.</p>"),
        "{page}"
    );
    // An unknown key, or text someone wrote into a link, shows nothing.
    for query in [
        "done=you-won-a-prize",
        "done=%3Cscript%3Ealert(1)%3C/script%3E",
        "done=Your+account+is+closed",
    ] {
        let page = visitor.get(s, &format!("/login?{query}")).text();
        assert!(!page.contains("role=\"status\""), "{query}: {page}");
        assert!(!page.contains("prize") && !page.contains("alert(1)") && !page.contains("closed"));
    }
    // An offering's own keys work too.
    let page = visitor.get(s, "/?done=notes-shared").text();
    assert!(page.contains("The note was shared."), "{page}");
}
