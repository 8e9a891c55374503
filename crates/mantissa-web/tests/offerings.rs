//! An offering's URL space: private pages for the signed-in owner, items
//! published at stable slugs under /users/<name>/, and 301s when a slug
//! changes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Router};
use mantissa_testkit::notes::{Note, Notes};
use mantissa_testkit::*;
use mantissa_web::{App, Page, Session, WebOptions};

fn routes() -> Router<App> {
    async fn login(State(app): State<App>, Extension(s): Extension<Session>) -> &'static str {
        s.begin(&app, Some("alice".into()), Duration::from_secs(3600))
            .await
            .unwrap();
        "welcome"
    }
    Router::new().route("/test/login", post(login)).route(
        "/test/token",
        get(|| async { Page::new("token.html", serde_json::json!({})) }),
    )
}

fn setup() -> Setup {
    Setup {
        options: WebOptions {
            offerings: vec![Arc::new(Notes)],
            templates: vec![("token.html".into(), "{{ csrf_field() }}")],
            ..WebOptions::default()
        },
        ..Setup::default()
    }
}

fn sign_in(s: &TestServer) -> String {
    let page = s.get("/test/token");
    let token = cookie_value(set_cookie(&page, "mantissa_csrf").unwrap());
    let csrf = format!("mantissa_csrf={token}");
    let r = s.post_form(
        "/test/login",
        &[("Cookie", &csrf)],
        &format!("csrf_token={token}"),
    );
    let session = cookie_value(set_cookie(&r, "mantissa_session").unwrap());
    format!("{csrf}; mantissa_session={session}")
}

#[test]
fn private_pages_are_for_the_signed_in_owner_with_their_json() {
    let s = TestServer::start(setup(), routes);
    let alice = s.site.user_store("alice").unwrap();
    alice
        .write_blocking(|tx| {
            tx.insert(&Note {
                title: "b-second".into(),
                body: String::new(),
            })?;
            tx.insert(&Note {
                title: "a-first".into(),
                body: String::new(),
            })
            .map(drop)
        })
        .unwrap();
    let anonymous = s.get("/private/notes/");
    assert_eq!(anonymous.status, 303);
    assert_eq!(
        anonymous.header("location"),
        Some("/login?next=%2Fprivate%2Fnotes")
    );
    let cookies = sign_in(&s);
    let page = s.get_with("/private/notes/", &[("Cookie", &cookies)]);
    assert_eq!(page.status, 200);
    // The notes page lists each note under its title, in title order.
    let text = page.text();
    let (a, b) = (
        text.find("<h3>a-first</h3>"),
        text.find("<h3>b-second</h3>"),
    );
    assert!(matches!((a, b), (Some(a), Some(b)) if a < b), "{text}");
    let api = s.get_with("/api/private/notes/", &[("Cookie", &cookies)]);
    let data: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(data["notes"], serde_json::json!(["a-first", "b-second"]));
    // No JSON without signing in: 401 with a problem, not the log-in
    // page's redirect (issue 14, item 9).
    let r = s.get("/api/private/notes/");
    assert_eq!(r.status, 401, "no JSON without signing in");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(s.get("/private/notes/").status, 303);
}

#[test]
fn published_items_have_stable_slugs_and_old_urls_redirect() {
    let s = TestServer::start(setup(), routes);
    let alice = s.site.user_store("alice").unwrap();
    let note = alice
        .write_blocking(|tx| -> Result<_, mantissa_web::PublishError> {
            let n = tx.insert(&Note {
                title: "Hello, World!".into(),
                body: "<b>hi</b>".into(),
            })?;
            let slug = mantissa_web::publish(tx, "notes", n, "Hello, World!")?;
            assert_eq!(slug, "hello-world");
            Ok(n)
        })
        .unwrap();
    let r = s.get("/users/alice/hello-world");
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(
        t.contains("<h1>Hello, World!</h1>") && t.contains("&lt;b&gt;hi&lt;&#x2f;b&gt;"),
        "{t}"
    );

    // The title changes, and with it the slug: the old URL moves permanently.
    alice
        .write_blocking(move |tx| mantissa_web::publish(tx, "notes", note, "Greetings").map(drop))
        .unwrap();
    let old = s.get("/users/alice/hello-world?ref=feed");
    assert_eq!(old.status, 301);
    assert_eq!(
        old.header("location"),
        Some("/users/alice/greetings?ref=feed")
    );
    assert_eq!(s.get("/users/alice/greetings").status, 200);
    // A second rename: the first URL goes straight to the newest.
    alice
        .write_blocking(move |tx| mantissa_web::publish(tx, "notes", note, "Salutations").map(drop))
        .unwrap();
    assert_eq!(
        s.get("/users/alice/hello-world").header("location"),
        Some("/users/alice/salutations")
    );

    for missing in [
        "/users/alice/no-such-slug",
        "/users/nobody/hello-world",
        "/users/Bad..Name/x",
        "/users/alice/salutations/extra",
    ] {
        assert_eq!(s.get(missing).status, 404, "{missing}");
    }
    let api = s.get("/api/users/alice/salutations");
    let data: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(data["title"], "Hello, World!");
}

/// An offering whose templates are compiled from a folder, and a handler
/// that fails.
struct Folded(std::path::PathBuf);

impl mantissa_web::Offering for Folded {
    fn name(&self) -> &'static str {
        "folded"
    }
    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        vec![("folded/page.html", "compiled in")]
    }
    fn template_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.0.clone())
    }
    fn private_routes(&self) -> Router<App> {
        Router::new().route(
            "/",
            get(|| async { Page::new("folded/page.html", serde_json::json!({})) }),
        )
    }
}

fn folded_site(dev: bool, folder: &std::path::Path) -> TestServer {
    TestServer::start(
        Setup {
            options: WebOptions {
                dev,
                offerings: vec![Arc::new(Folded(folder.to_path_buf()))],
                templates: vec![("token.html".into(), "{{ csrf_field() }}")],
                ..WebOptions::default()
            },
            ..Setup::default()
        },
        || {
            routes().route(
                "/test/fails",
                get(|| async {
                    Err::<Page, _>(mantissa_web::WebError::Internal(
                        "the database said no: disk full".into(),
                    ))
                }),
            )
        },
    )
}

#[test]
fn in_development_offering_templates_reload_from_their_folder_and_errors_show_their_cause() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(folder.path().join("folded")).unwrap();
    let file = folder.path().join("folded/page.html");
    std::fs::write(&file, "first version").unwrap();
    let s = folded_site(true, folder.path());
    let cookie = sign_in(&s);
    let page = |s: &TestServer| {
        s.get_with("/private/folded/", &[("Cookie", &cookie)])
            .text()
    };
    assert_eq!(page(&s), "first version");
    std::fs::write(&file, "second version").unwrap();
    assert_eq!(page(&s), "second version", "an edit shows on the next load");
    // A template with a mistake: every template is checked at start too.
    std::fs::write(&file, "{% if %}").unwrap();
    let errors = s.app.templates().check_all();
    assert!(
        errors.iter().any(|e| e.name == "folded/page.html"),
        "{errors:?}"
    );

    let r = s.get("/test/fails");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("the database said no: disk full"),
        "{}",
        r.text()
    );
}

#[test]
fn in_production_offering_templates_are_the_compiled_ones_and_errors_keep_their_cause() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(folder.path().join("folded")).unwrap();
    std::fs::write(folder.path().join("folded/page.html"), "from the folder").unwrap();
    let s = folded_site(false, folder.path());
    let cookie = sign_in(&s);
    let r = s.get_with("/private/folded/", &[("Cookie", &cookie)]);
    assert_eq!(r.text(), "compiled in");
    assert!(s.app.templates().check_all().is_empty());

    let r = s.get("/test/fails");
    assert_eq!(r.status, 500);
    assert!(!r.text().contains("disk full"), "{}", r.text());
    assert!(r.text().contains("Something went wrong"));
}
