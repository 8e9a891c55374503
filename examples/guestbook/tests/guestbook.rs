//! The guestbook as its users meet it, over HTTP against a real site on
//! 127.0.0.1 (`mantissa::testing`): the owner writes in their book and
//! renames it, visitors read it and sign it, and forms with mistakes come
//! back with what was typed and a message beside the field.

use std::sync::Arc;

use guestbook::Guestbook;
use mantissa::testing::{TestSite, shown};

const PASSWORD: &str = "ann's long password";

fn site_with_ann() -> TestSite {
    let site = TestSite::start(vec![Arc::new(Guestbook)]);
    site.add_user("ann", PASSWORD);
    site
}

#[test]
fn the_owner_writes_in_their_book_and_renames_it() {
    let site = site_with_ann();
    let mut ann = site.log_in("ann", PASSWORD);
    let page = ann.get("/private/guestbook/");
    assert_eq!(page.status, 200);
    let html = shown(&page.text());
    // The navigation links to it, marked as the page one is on.
    assert!(
        html.contains("<a href=\"/private/guestbook\" aria-current=\"page\">Guestbook</a>"),
        "{html}"
    );
    assert!(html.contains("My guestbook"), "{html}");
    assert!(html.contains("/users/ann/my-guestbook"), "{html}");
    assert!(html.contains("No one has written in it yet."), "{html}");

    let r = ann.submit(
        "/private/guestbook/",
        "/private/guestbook/",
        &[("text", "Welcome, everyone!")],
    );
    assert_eq!(r.status, 303);
    let to = r.header("location").unwrap().to_string();
    assert_eq!(to, "/private/guestbook/?done=guestbook-written");
    let html = shown(&ann.get(&to).text());
    assert!(html.contains("Your entry is in the book."), "{html}");
    assert!(html.contains("1 entry"), "{html}");
    assert!(html.contains("Welcome, everyone!"), "{html}");

    // The same data as JSON, for scripts and apps.
    let json: serde_json::Value =
        serde_json::from_slice(&ann.get("/api/private/guestbook").body).unwrap();
    assert_eq!(json["entries"][0]["author"], "ann");
    assert_eq!(json["entries"][0]["text"], "Welcome, everyone!");

    let r = ann.submit(
        "/private/guestbook/",
        "/private/guestbook/title",
        &[("title", "Ann's visitors")],
    );
    assert_eq!(
        r.header("location"),
        Some("/private/guestbook/?done=guestbook-renamed")
    );
    let mut visitor = site.visitor();
    let book = visitor.get("/users/ann/ann-s-visitors");
    assert_eq!(book.status, 200);
    assert!(shown(&book.text()).contains("Welcome, everyone!"));
    // The old address leads to the new one.
    let old = visitor.get("/users/ann/my-guestbook");
    assert_eq!(old.status, 301);
    assert_eq!(old.header("location"), Some("/users/ann/ann-s-visitors"));
}

#[test]
fn visitors_sign_the_book_with_their_name_or_as_themselves() {
    let site = site_with_ann();
    site.add_user("bob", "bob's long password");
    let book = "/users/ann/my-guestbook";

    let mut visitor = site.visitor();
    let page = visitor.get(book);
    assert_eq!(page.status, 200);
    assert!(shown(&page.text()).contains("No one has signed it yet."));
    let r = visitor.submit(book, book, &[("name", "Carol"), ("text", "Lovely page")]);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/users/ann/my-guestbook?done=guestbook-signed")
    );
    let html = shown(
        &visitor
            .get("/users/ann/my-guestbook?done=guestbook-signed")
            .text(),
    );
    assert!(html.contains("Thank you for signing the book."), "{html}");
    assert!(html.contains("Carol"), "{html}");
    assert!(html.contains("Lovely page"), "{html}");

    // A signed-in visitor signs as themselves, whatever name they send.
    let mut bob = site.log_in("bob", "bob's long password");
    let r = bob.submit(book, book, &[("name", "Not Bob"), ("text", "Hi Ann")]);
    assert_eq!(r.status, 303);
    let mut ann = site.log_in("ann", PASSWORD);
    let json: serde_json::Value =
        serde_json::from_slice(&ann.get("/api/private/guestbook").body).unwrap();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["author"], "bob");
    assert_eq!(entries[0]["signed_in"], true);
    assert_eq!(entries[1]["author"], "Carol");
    assert_eq!(entries[1]["signed_in"], false);
}

#[test]
fn a_form_with_a_mistake_comes_back_with_what_was_typed() {
    let site = site_with_ann();
    let book = "/users/ann/my-guestbook";
    let mut visitor = site.visitor();

    let r = visitor.submit(book, book, &[("name", ""), ("text", "Kept text")]);
    assert_eq!(r.status, 422);
    let html = shown(&r.text());
    assert!(
        html.contains("Say who you are: a name is needed."),
        "{html}"
    );
    assert!(html.contains(">Kept text</textarea>"), "{html}");

    let r = visitor.submit(book, book, &[("name", "Dan"), ("text", "   ")]);
    assert_eq!(r.status, 422);
    let html = shown(&r.text());
    assert!(
        html.contains("Write something to sign the book with."),
        "{html}"
    );
    assert!(html.contains("value=\"Dan\""), "{html}");

    let long = "x".repeat(guestbook::TEXT_MAX + 1);
    let r = visitor.submit(book, book, &[("name", "Dan"), ("text", &long)]);
    assert_eq!(r.status, 422);

    // Nothing was written.
    let page = shown(&visitor.get(book).text());
    assert!(page.contains("No one has signed it yet."), "{page}");

    let mut ann = site.log_in("ann", PASSWORD);
    let r = ann.submit(
        "/private/guestbook/",
        "/private/guestbook/title",
        &[("title", " ")],
    );
    assert_eq!(r.status, 422);
    assert!(shown(&r.text()).contains("A title has 1 to 80 characters."));
}

#[test]
fn a_book_that_is_not_shared_for_signing_cannot_be_signed() {
    let site = site_with_ann();
    // Ann stops sharing it with everyone, and shares it to be read only.
    let ann = site.site().user_store("ann").unwrap();
    ann.write_blocking(|tx| {
        let book = tx.query::<guestbook::Book>().first()?.unwrap().id();
        mantissa::accounts::unshare(tx, book, mantissa::accounts::Role::Everyone)?;
        mantissa::accounts::share(tx, book, mantissa::accounts::Role::Everyone, &["view"])
    })
    .unwrap();
    let book = "/users/ann/my-guestbook";
    let mut visitor = site.visitor();
    let page = shown(&visitor.get(book).text());
    assert!(!page.contains("Sign the book"), "{page}");
    // A form sent anyway (with a good CSRF token, from the log-in page)
    // is refused, and writes nothing.
    let r = visitor.submit("/login", book, &[("name", "Eve"), ("text", "spam")]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let page = shown(&visitor.get(book).text());
    assert!(page.contains("No one has signed it yet."), "{page}");
}

#[test]
fn visitors_from_many_addresses_cannot_flood_a_book() {
    let site = site_with_ann();
    site.add_user("bob", "bob's long password");
    let book = "/users/ann/my-guestbook";
    // Each from an address of its own, as a spammer with many addresses
    // is: every one is under the site's per-address limits.
    for n in 0..guestbook::VISITOR_ENTRIES_PER_HOUR {
        let mut visitor = site.visitor_at(&format!("127.0.{}.{}", n / 200 + 1, n % 200 + 1));
        let r = visitor.submit(
            book,
            book,
            &[("name", "Spammer"), ("text", &format!("ad {n}"))],
        );
        assert_eq!(r.status, 303, "entry {n}: {}", r.text());
    }
    // One more, from yet another address: refused for now, saying why and
    // what to do, with what was typed kept.
    let mut visitor = site.visitor_at("127.0.9.9");
    let r = visitor.submit(
        book,
        book,
        &[("name", "Spammer"), ("text", "one ad too many")],
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let html = shown(&r.text());
    assert!(
        html.contains("Sign in to sign it now, or try again later."),
        "{html}"
    );
    assert!(html.contains("one ad too many"), "{html}");
    // Its JSON says so too, as a problem.
    let mut script = site.visitor_at("127.0.9.10");
    let r = script.submit(
        book,
        &format!("/api{book}"),
        &[("name", "Bot"), ("text", "ad")],
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("the most it takes"), "{}", r.text());
    // The book still shows, with what was let in and nothing after.
    let page = shown(&site.visitor().get(book).text());
    assert!(page.contains("ad 0"), "{page}");
    assert!(!page.contains("one ad too many"), "{page}");
    // A signed-in visitor, who answers for what they write, still signs.
    let mut bob = site.log_in("bob", "bob's long password");
    let r = bob.submit(book, book, &[("text", "Hi Ann, sorry about the ads")]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(shown(&bob.get(book).text()).contains("sorry about the ads"));
}
