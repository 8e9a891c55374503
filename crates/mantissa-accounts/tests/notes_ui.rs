//! The notes offering's own pages (mantissa_testkit::notes), over HTTP:
//! writing a note publishes it, two notes of one title get two addresses,
//! sharing and stopping a share change who sees it, and bad forms change
//! nothing. (tests/browser/sharing.test.mjs walks the same pages in
//! Chromium, as alice, bob and an anonymous visitor.)

mod support;

use mantissa_testkit::*;
use support::{logged_in, world};

fn entries(v: &mut Visitor, s: &TestServer) -> Vec<serde_json::Value> {
    let r = v.get(s, "/api/private/notes");
    assert_eq!(r.status, 200);
    let data: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    data["entries"].as_array().unwrap().clone()
}

#[test]
fn notes_are_written_shared_and_unshared_from_their_page() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    for (name, password) in [
        ("alice", "alice's long password"),
        ("bob", "bob's long password"),
    ] {
        w.accounts
            .create_user(name, None, Some(password), false)
            .unwrap();
    }
    let s = &w.server;
    let mut alice = logged_in(s, "alice", "alice's long password");
    let mut bob = logged_in(s, "bob", "bob's long password");
    let page = "/private/notes/";

    for body in ["first", "second"] {
        let r = alice.submit(s, page, page, &[("title", "Plans"), ("body", body)]);
        assert_eq!(r.status, 303);
        // Back to the list, which says what happened.
        assert_eq!(
            r.header("location"),
            Some("/private/notes/?done=notes-saved")
        );
        assert!(
            alice
                .follow(s, &r)
                .text()
                .contains("Note saved and published")
        );
    }
    let notes = entries(&mut alice, s);
    assert_eq!(notes.len(), 2, "{notes:?}");
    // The first gets the title's address, the second its id after it.
    let urls: Vec<&str> = notes.iter().map(|n| n["url"].as_str().unwrap()).collect();
    let first = notes
        .iter()
        .find(|n| n["url"] == "/users/alice/plans")
        .unwrap_or_else(|| panic!("{urls:?}"));
    assert_eq!(first["body"], "first");
    let second_url = urls
        .iter()
        .find(|u| **u != "/users/alice/plans")
        .unwrap()
        .to_string();
    assert!(
        second_url.starts_with("/users/alice/plans-"),
        "{second_url}"
    );
    let id = first["id"].as_i64().unwrap();
    let share = format!("/private/notes/{id}/share");
    let unshare = format!("/private/notes/{id}/unshare");

    // Bad forms change nothing. A note without a title is the form again
    // (422), keeping what was typed, the message beside the title.
    let r = alice.submit(s, page, page, &[("title", "  "), ("body", "kept")]);
    assert_eq!(r.status, 422);
    assert!(shown(&r.text()).contains("A note needs a title."));
    assert!(r.text().contains(">kept</textarea>"), "{}", r.text());
    // So is one sent without its title field at all: never axum's text.
    let r = alice.submit(s, page, page, &[("body", "no title")]);
    assert_eq!(r.status, 422);
    assert!(!r.text().contains("missing field"));
    assert_eq!(
        alice
            .submit(s, page, &share, &[("role", "the-world")])
            .status,
        400
    );
    // A name that is no account's is refused on the form itself (422).
    for user in ["", "../bob"] {
        let r = alice.submit(s, page, &share, &[("role", "user"), ("user", user)]);
        assert_eq!(r.status, 422, "{user:?}");
        assert!(shown(&r.text()).contains("role=\"alert\""), "{user:?}");
    }
    assert_eq!(
        alice
            .submit(s, page, &unshare, &[("role", "nobody")])
            .status,
        400
    );
    // A note that is not in the owner's store is not found: bob cannot
    // share alice's note by its id.
    assert_eq!(
        bob.submit(s, page, &share, &[("role", "everyone")]).status,
        404
    );
    assert_eq!(
        alice
            .submit(
                s,
                page,
                "/private/notes/999999/share",
                &[("role", "everyone")]
            )
            .status,
        404
    );
    assert_eq!(entries(&mut alice, s).len(), 2);
    assert_eq!(s.get("/users/alice/plans").status, 404);
    assert_eq!(bob.get(s, "/users/alice/plans").status, 404);

    // Shared with bob, to view and edit.
    let r = alice.submit(
        s,
        page,
        &share,
        &[("role", "user"), ("user", "bob"), ("edit", "on")],
    );
    assert_eq!(r.status, 303);
    let shares = |v: &mut Visitor| {
        entries(v, s).into_iter().find(|n| n["id"] == id).unwrap()["shares"].clone()
    };
    let bob_id = w
        .accounts
        .site()
        .store()
        .read_blocking(|r| {
            r.query::<mantissa_accounts::Account>()
                .filter(mantissa_accounts::Account::username.eq("bob"))
                .ids()
        })
        .unwrap()[0]
        .id();
    let bob_role = format!("account:{bob_id}");
    assert_eq!(
        shares(&mut alice),
        serde_json::json!([{ "role": bob_role, "label": "bob", "capabilities": "view, edit" }])
    );
    let seen = bob.get(s, "/users/alice/plans");
    assert_eq!(seen.status, 200);
    assert!(seen.text().contains("You may edit this note."));
    assert_eq!(s.get("/users/alice/plans").status, 404);
    assert_eq!(
        s.get(&second_url).status,
        404,
        "only the one note is shared"
    );

    // Signed-in users, then no one again.
    let r = alice.submit(s, page, &share, &[("role", "signed-in")]);
    assert_eq!(r.status, 303);
    assert_eq!(s.get("/users/alice/plans").status, 404);
    for role in [bob_role.as_str(), "signed-in"] {
        assert_eq!(
            alice.submit(s, page, &unshare, &[("role", role)]).status,
            303
        );
    }
    assert_eq!(shares(&mut alice), serde_json::json!([]));
    assert_eq!(bob.get(s, "/users/alice/plans").status, 404);
    assert_eq!(alice.get(s, "/users/alice/plans").status, 200);
}

/// Issue 13, item 23: two notes whose titles share their first 80 slug
/// characters: the second answered 500 ("the address … is already used"),
/// because the id was appended before the slug was cut.
#[test]
fn two_long_titles_alike_in_their_first_80_characters_get_two_addresses() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("alice", None, Some("alice's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut alice = logged_in(s, "alice", "alice's long password");
    let page = "/private/notes/";
    let common = "a very long title ".repeat(6);
    for ending in ["one", "two", "three"] {
        let title = format!("{common}{ending}");
        let r = alice.submit(s, page, page, &[("title", &title)]);
        assert_eq!(r.status, 303, "{title}: {}", r.text());
    }
    let notes = entries(&mut alice, s);
    let mut urls: Vec<String> = notes
        .iter()
        .map(|n| n["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 3, "{urls:?}");
    for n in &notes {
        let url = n["url"].as_str().unwrap();
        let slug = url.strip_prefix("/users/alice/").unwrap();
        assert!(slug.len() <= 80 && !slug.ends_with('-'), "{slug}");
        let r = alice.get(s, url);
        assert_eq!(r.status, 200, "{url}");
        assert!(r.text().contains(n["title"].as_str().unwrap()), "{url}");
    }
}

/// Issue 13, item 25: slugs dropped every non-ASCII letter ("Été à Paris"
/// became `t-paris`, a Japanese title `item`). Now they are transliterated.
#[test]
fn titles_in_other_scripts_get_readable_addresses() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("alice", None, Some("alice's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut alice = logged_in(s, "alice", "alice's long password");
    let page = "/private/notes/";
    for (title, url) in [
        ("Café & Crème – ünïcode", "/users/alice/cafe-creme-unicode"),
        ("Été à Paris", "/users/alice/ete-a-paris"),
        ("Straße in Köln", "/users/alice/strasse-in-koln"),
        ("Москва", "/users/alice/moskva"),
    ] {
        let r = alice.submit(s, page, page, &[("title", title)]);
        assert_eq!(r.status, 303, "{title}");
        let r = alice.get(s, url);
        assert_eq!(r.status, 200, "{title} at {url}");
        assert!(shown(&r.text()).contains(title), "{title}");
    }
    // A title with no Latin letters at all still gets its own address,
    // not the placeholder `item`.
    let r = alice.submit(s, page, page, &[("title", "日本語のタイトル")]);
    assert_eq!(r.status, 303);
    let notes = entries(&mut alice, s);
    let japanese = notes
        .iter()
        .find(|n| n["title"] == "日本語のタイトル")
        .unwrap();
    let url = japanese["url"].as_str().unwrap();
    assert!(!url.ends_with("/item") && url.is_ascii(), "{url}");
    assert_eq!(alice.get(s, url).status, 200);
}

/// A note shared with everyone that holds an e-mail address: a harvester
/// reading its page or the page's JSON, decoding them as browsers do, finds
/// no address; its owner, signed in, reads it as written.
#[test]
fn a_public_notes_addresses_are_hidden_from_harvesters() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("alice", None, Some("alice's long password"), false)
        .unwrap();
    let s = &w.server;
    let mut alice = logged_in(s, "alice", "alice's long password");
    let page = "/private/notes/";
    let r = alice.submit(
        s,
        page,
        page,
        &[
            ("title", "Contact"),
            ("body", "Mail carol.c@example.org & ask."),
        ],
    );
    assert_eq!(r.status, 303);
    let id = entries(&mut alice, s)[0]["id"].as_i64().unwrap();
    let r = alice.submit(
        s,
        page,
        &format!("/private/notes/{id}/share"),
        &[("role", "everyone")],
    );
    assert_eq!(r.status, 303);

    let mut harvester = Visitor::at("127.0.21.1");
    for path in ["/users/alice/contact", "/api/users/alice/contact"] {
        let r = harvester.get(s, path);
        assert_eq!(r.status, 200, "{path}");
        let text = shown(&r.text());
        assert!(
            !text.contains("carol.c@") && !text.contains("example.org"),
            "{path}: {text}"
        );
        assert!(text.contains("/reveal/"), "{path}: {text}");
        assert!(
            text.contains("Mail ") && text.contains(" & ask."),
            "{path}: {text}"
        );
    }
    let own = shown(&alice.get(s, "/users/alice/contact").text());
    assert!(own.contains("Mail carol.c@example.org & ask."), "{own}");
}

/// The list of notes, and its JSON, come 50 at a time with links between
/// the pages.
#[test]
fn the_notes_list_comes_in_pages() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("alice", None, Some("alice's long password"), false)
        .unwrap();
    let s = &w.server;
    let store = w.server.site.user_store("alice").unwrap();
    store
        .write_blocking(|tx| -> mantissa_store::Result<_> {
            for i in 0..120 {
                tx.insert(&mantissa_testkit::notes::Note {
                    title: format!("Note {i:03}"),
                    body: String::new(),
                })?;
            }
            Ok(())
        })
        .unwrap();
    let mut alice = logged_in(s, "alice", "alice's long password");
    let first = alice.get(s, "/private/notes/").text();
    assert!(first.contains("Page 1 of 3 (120 notes)"), "{first}");
    assert!(first.contains("<h3>Note 049</h3>") && !first.contains("<h3>Note 050</h3>"));
    assert!(first.contains("href=\"/private/notes/?page=2\">Next</a>"));
    let api = alice.get(s, "/api/private/notes?page=3");
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 20, "{json}");
    assert_eq!(json["notes"][0], "Note 100");
    assert_eq!(json["pager"]["page"], 3);

    // A share refused on the last page is answered with that page, the
    // form and its message on it.
    let page = "/private/notes/";
    let r = alice.submit(s, page, page, &[("title", "Zzz last"), ("body", "")]);
    assert_eq!(r.status, 303);
    let api = alice.get(s, "/api/private/notes?page=3");
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    let last = json["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["title"], "Zzz last");
    let r = alice.submit(
        s,
        "/private/notes/?page=3",
        &format!("/private/notes/{}/share", last["id"]),
        &[("role", "user"), ("user", "nobody-here")],
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let text = r.text();
    assert!(text.contains("Page 3 of 3 (121 notes)"), "{text}");
    assert!(text.contains("id=\"share-problem-"), "{text}");
}
