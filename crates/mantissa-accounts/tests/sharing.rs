//! Who sees what: every route of every offering, walked as an anonymous
//! visitor, as other users and as the owner. Anything not shared answers
//! 404, never 403.

mod support;

use mantissa_accounts::{Role, set_group, share};
use mantissa_testkit::notes::Note;
use mantissa_testkit::*;
use support::{logged_in, world};

#[test]
fn every_route_answers_each_visitor_exactly_what_their_roles_allow() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    for (name, password) in [
        ("alice", "alice's long password"),
        ("bob", "bob's long password"),
        ("carol", "carol's long password"),
    ] {
        w.accounts
            .create_user(name, None, Some(password), false)
            .unwrap();
    }
    let alice_store = w.server.site.user_store("alice").unwrap();
    alice_store
        .write_blocking(|tx| {
            let note = |tx: &mut mantissa_store::Write<'_>, title: &str| {
                let n = tx.insert(&Note {
                    title: title.into(),
                    body: format!("the {title} note"),
                })?;
                mantissa_web::publish(tx, "notes", n, title)?;
                Ok::<_, mantissa_store::StoreError>(n)
            };
            let public = note(tx, "public")?;
            share(tx, public, Role::Everyone, &["view"])?;
            let members = note(tx, "members")?;
            share(tx, members, Role::SignedIn, &["view"])?;
            let for_bob = note(tx, "for-bob")?;
            share(tx, for_bob, Role::User("bob".into()), &["view", "edit"])?;
            let friends = note(tx, "friends")?;
            set_group(tx, "friends", &["carol"])?;
            share(tx, friends, Role::Group("friends".into()), &["view"])?;
            let secret = note(tx, "secret")?;
            // Renamed: the old slug must not reveal it either.
            mantissa_web::publish(tx, "notes", secret, "top-secret")?;
            Ok(())
        })
        .unwrap();

    let s = &w.server;
    let mut visitors: Vec<(&str, Visitor)> = vec![("anonymous", Visitor::default())];
    for (name, password) in [
        ("alice", "alice's long password"),
        ("bob", "bob's long password"),
        ("carol", "carol's long password"),
    ] {
        visitors.push((name, logged_in(s, name, password)));
    }

    // (path, expected status for anonymous, alice, bob, carol)
    let expected: &[(&str, [u16; 4])] = &[
        ("/users/alice/public", [200, 200, 200, 200]),
        ("/users/alice/members", [404, 200, 200, 200]),
        ("/users/alice/for-bob", [404, 200, 200, 404]),
        ("/users/alice/friends", [404, 200, 404, 200]),
        ("/users/alice/top-secret", [404, 200, 404, 404]),
        ("/users/alice/secret", [404, 301, 404, 404]),
        ("/users/alice/no-such-note", [404, 404, 404, 404]),
        ("/users/alice/public/anything-below", [404, 404, 404, 404]),
        ("/private/notes", [303, 200, 200, 200]),
        ("/private/settings", [303, 200, 200, 200]),
    ];
    for (path, statuses) in expected {
        for (i, (who, v)) in visitors.iter_mut().enumerate() {
            for p in [path.to_string(), format!("/api{path}")] {
                let r = v.get(s, &p);
                assert_eq!(r.status, statuses[i], "{who} GET {p}");
                if r.status == 404 {
                    assert!(
                        !r.text().contains("by alice") && !r.text().contains(" note\""),
                        "{who} GET {p} leaked: {}",
                        r.text()
                    );
                }
            }
        }
    }

    // What the page grants: only bob (and alice) may edit "for-bob".
    let bob_page = visitors[2].1.get(s, "/users/alice/for-bob").text();
    assert!(bob_page.contains("You may edit this note."));
    let carol_page = visitors[3].1.get(s, "/users/alice/friends").text();
    assert!(!carol_page.contains("You may edit"));
    // Private pages show each user their own store.
    let bob_notes = visitors[2].1.get(s, "/api/private/notes");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bob_notes.body).unwrap()["notes"],
        serde_json::json!([])
    );
    let alice_notes = visitors[1].1.get(s, "/api/private/notes");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&alice_notes.body).unwrap()["notes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}
