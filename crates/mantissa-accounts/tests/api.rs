//! Issue 14, items 9 and 10: `/api/…` speaks JSON in every case — 401 with
//! a problem (not a redirect to the log-in page) for a visitor who is not
//! signed in, RFC 9457 problem details for every error, JSON bodies for
//! writes answered with the item written — and describes itself in an
//! OpenAPI 3.1 document at `/api/openapi.json`. Over HTTP, against the
//! notes site on loopback.

mod support;

use mantissa_testkit::*;
use serde_json::{Value, json};
use support::{logged_in, with_token, world};

/// Sends `method path` with `headers` and `body` (a `Content-Length` is
/// added).
fn request(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    send_raw(s.addr, raw.as_bytes())
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", r.status, r.text()))
}

/// Checks that `r` is an RFC 9457 problem of `status`, and returns its
/// detail.
fn problem(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text()
    );
    let p = json_of(r);
    assert_eq!(p["type"], "about:blank", "{p}");
    assert_eq!(p["status"], status, "{p}");
    assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
    let detail = p["detail"].as_str().unwrap_or_default().to_string();
    assert!(!detail.is_empty(), "{p}");
    detail
}

/// A site with ann, and a write token of hers.
fn site_with_ann() -> (support::World, String) {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("ann", None, Some("ann's long password"), false)
        .unwrap();
    let token = mantissa_accounts::tokens::create(&w.server.site, "ann", "script", true).unwrap();
    (w, token)
}

#[test]
fn a_request_without_a_sign_in_gets_401_with_a_problem_not_the_log_in_page() {
    let (w, _) = site_with_ann();
    let s = &w.server;
    for path in ["/api/private/notes", "/api/private/settings"] {
        let r = s.get(path);
        let detail = problem(&r, 401);
        assert!(detail.contains("API token"), "{detail}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        assert!(r.header("location").is_none(), "{path}");
    }
    // A write without a sign-in: 401 too (not the CSRF check's 403: with
    // no session there is nothing a forged request could ride on).
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[("Content-Type", "application/json")],
        r#"{"title":"Plans"}"#,
    );
    problem(&r, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // A browser is still sent to the log-in page.
    let r = s.get("/private/notes");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=%2Fprivate%2Fnotes"));
    // A token that is not valid: 401, saying why.
    let r = s.get_with(
        "/api/private/notes",
        &[("Authorization", "Bearer mt_forged")],
    );
    assert!(problem(&r, 401).contains("not valid"));
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
}

#[test]
fn every_error_under_api_is_a_problem() {
    let (w, token) = site_with_ann();
    let s = &w.server;
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let json = ("Content-Type", "application/json");

    // Nothing there.
    problem(&s.get("/api/no/such/page"), 404);
    problem(&s.get_with("/api/private/notes/9999/share", &[auth]), 405);
    // A method the route does not take: axum's empty 405, with its Allow.
    let r = request(s, "PUT", "/api/private/notes", &[auth, json], "{}");
    problem(&r, 405);
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")));
    // Bodies that do not fit.
    let r = request(s, "POST", "/api/private/notes", &[auth, json], "{");
    assert!(problem(&r, 400).contains("JSON body could not be read"));
    // A form's refusals (a title missing, blank or too long) are 422, with
    // the words the form shows beside the field.
    let r = request(s, "POST", "/api/private/notes", &[auth, json], "{}");
    assert_eq!(problem(&r, 422), "A note needs a title.");
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[auth, json],
        r#"{"title":"   "}"#,
    );
    assert_eq!(problem(&r, 422), "A note needs a title.");
    let long = json!({ "title": "x".repeat(201) }).to_string();
    let r = request(s, "POST", "/api/private/notes", &[auth, json], &long);
    assert!(problem(&r, 422).contains("at most 200"));
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[auth, ("Content-Type", "text/plain")],
        "Plans",
    );
    assert!(problem(&r, 415).contains("application/json"));
    let r = request(
        s,
        "POST",
        "/api/private/notes/1/share",
        &[auth, json],
        r#"{"role":"the cat"}"#,
    );
    problem(&r, 400);
    // A note that is not hers, and a path that is not a number.
    let r = request(
        s,
        "POST",
        "/api/private/notes/9999/share",
        &[auth, json],
        r#"{"role":"everyone"}"#,
    );
    problem(&r, 404);
    let r = request(
        s,
        "POST",
        "/api/private/notes/nine/share",
        &[auth, json],
        r#"{"role":"everyone"}"#,
    );
    problem(&r, 400);
    // A read token may not write.
    let read = mantissa_accounts::tokens::create(&s.site, "ann", "phone", false).unwrap();
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[("Authorization", &format!("Bearer {read}")), json],
        r#"{"title":"Plans"}"#,
    );
    assert!(problem(&r, 403).contains("may only read"));
    // Nothing was written by any of them.
    let list = json_of(&s.get_with("/api/private/notes", &[auth]));
    assert_eq!(list["notes"], json!([]), "{list}");
}

#[test]
fn writes_take_json_or_a_form_and_answer_with_the_item() {
    let (w, token) = site_with_ann();
    let s = &w.server;
    w.accounts
        .create_user("bob", None, Some("bob's long password"), false)
        .unwrap();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let json = ("Content-Type", "application/json");

    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[auth, json],
        r#"{"title":"Holiday plans","body":"Go north."}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("location"), Some("/api/users/ann/holiday-plans"));
    let note = json_of(&r);
    assert_eq!(note["title"], "Holiday plans");
    assert_eq!(note["body"], "Go north.");
    assert_eq!(note["url"], "/users/ann/holiday-plans");
    assert_eq!(note["shares"], json!([]));
    let id = note["id"].as_i64().unwrap();
    // It is there, at its address, for her.
    let r = s.get_with("/api/users/ann/holiday-plans", &[auth]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["body"], "Go north.");

    // A form works the same.
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[auth, ("Content-Type", "application/x-www-form-urlencoded")],
        "title=Shopping&body=Bread",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(json_of(&r)["title"], "Shopping");

    // Shared with bob, to edit: the note as it is now.
    let r = request(
        s,
        "POST",
        &format!("/api/private/notes/{id}/share"),
        &[auth, json],
        r#"{"role":"user","user":"bob","edit":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let shared = json_of(&r);
    assert_eq!(shared["id"], id);
    assert_eq!(shared["shares"][0]["label"], "bob", "{shared}");
    assert_eq!(shared["shares"][0]["capabilities"], "view, edit");
    let role = shared["shares"][0]["role"].as_str().unwrap().to_string();
    // With someone nobody is: 422, saying so.
    let r = request(
        s,
        "POST",
        &format!("/api/private/notes/{id}/share"),
        &[auth, json],
        r#"{"role":"user","user":"nobody"}"#,
    );
    assert!(problem(&r, 422).contains("There is no user called “nobody”"));
    // No longer shared.
    let r = request(
        s,
        "POST",
        &format!("/api/private/notes/{id}/unshare"),
        &[auth, json],
        &json!({ "role": role }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["shares"], json!([]));

    // The page's own form still goes back to the list (303).
    let mut ann = logged_in(s, "ann", "ann's long password");
    let r = ann.submit(
        s,
        "/private/notes",
        "/private/notes",
        &[("title", "From the page")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/private/notes/?done=notes-saved")
    );
    // A browser session writing JSON sends its CSRF token in a header.
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[("Cookie", &ann.header()), json],
        r#"{"title":"From a script"}"#,
    );
    assert!(problem(&r, 403).contains("CSRF"));
    let csrf = ann.cookie("mantissa_csrf").unwrap().to_string();
    let r = request(
        s,
        "POST",
        "/api/private/notes",
        &[("Cookie", &ann.header()), ("X-CSRF-Token", &csrf), json],
        r#"{"title":"From a script"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let list = json_of(&s.get_with("/api/private/notes", &[auth]));
    assert_eq!(
        list["notes"],
        json!([
            "From a script",
            "From the page",
            "Holiday plans",
            "Shopping"
        ])
    );
}

#[test]
fn the_openapi_document_describes_the_routes() {
    let (w, _) = site_with_ann();
    let s = &w.server;
    let r = s.get("/api/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = json_of(&r);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api", "get"),
        ("/api/users/{name}/{slug}", "get"),
        ("/api/private/notes", "get"),
        ("/api/private/notes", "post"),
        ("/api/private/notes/{id}/share", "post"),
        ("/api/private/notes/{id}/unshare", "post"),
        ("/api/users/{name}/{slug}", "post"),
        ("/api/private/settings", "get"),
        ("/api/private/settings/password", "post"),
        ("/api/private/settings/tokens", "post"),
        ("/api/private/settings/email", "post"),
        ("/api/private/settings/totp/{switch}", "post"),
        ("/api/login", "get"),
        ("/api/login", "post"),
        ("/api/logout", "post"),
        ("/api/signup", "post"),
        ("/api/reset", "post"),
        ("/api/reset/{token}", "post"),
        ("/api/verify/{token}", "post"),
        ("/api/admin", "get"),
        ("/api/admin/users", "get"),
        ("/api/admin/users", "post"),
        ("/api/admin/users/{name}", "get"),
        ("/api/admin/users/{name}/{action}", "post"),
        ("/api/admin/signup", "post"),
        ("/api/admin/products/{joined_by}", "post"),
        ("/api/admin/offerings/{name}/{switch}", "post"),
        ("/api/admin/logs", "get"),
        ("/api/admin/mail", "get"),
        ("/api/admin/mail/retry", "post"),
        ("/api/admin/mail/{id}/{action}", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}: {doc}");
    }
    let create = &paths["/api/private/notes"]["post"];
    assert_eq!(create["security"], json!([{ "token": [] }]));
    assert!(create["requestBody"]["content"]["application/json"].is_object());
    assert!(create["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(create["responses"]["201"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["token"],
        json!({ "type": "http", "scheme": "bearer" })
    );
    for schema in ["Problem", "NoteList", "NoteEntry", "NewNote", "Pager"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // It describes /api/ only.
    assert_eq!(s.get("/openapi.json").status, 404);
}

#[test]
fn the_settings_take_json_from_the_signed_in_person_and_say_what_happened() {
    let (w, token) = site_with_ann();
    let s = &w.server;
    let json = ("Content-Type", "application/json");
    let mut ann = logged_in(s, "ann", "ann's long password");
    ann.get(s, "/private/settings");
    let csrf = ann.cookie("mantissa_csrf").unwrap().to_string();
    let cookie = ann.header();
    let as_ann = [("Cookie", cookie.as_str()), ("X-CSRF-Token", &csrf), json];

    // A mistake is a problem with the words the form shows beside the field.
    let r = request(
        s,
        "POST",
        "/api/private/settings/password",
        &as_ann,
        r#"{"current":"not it","new":"a brand new long password"}"#,
    );
    let detail = problem(&r, 422);
    assert!(
        !detail.is_empty() && !detail.contains("refused"),
        "{detail}"
    );

    // Done: the settings, saying what happened.
    let r = request(
        s,
        "POST",
        "/api/private/settings/password",
        &as_ann,
        r#"{"current":"ann's long password","new":"a brand new long password"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json_of(&r)["done"],
        "Password changed. Your other sessions have ended."
    );
    // The old password no longer logs in; the new one does.
    let mut v = Visitor::default();
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", "ann's long password")],
    );
    assert_eq!(r.status, 401);
    logged_in(s, "ann", "a brand new long password");

    // A token cannot make tokens: the settings are the person's, signed
    // in (and a token is not told that the page is there).
    let auth = format!("Bearer {token}");
    let r = request(
        s,
        "POST",
        "/api/private/settings/tokens",
        &[("Authorization", &auth), json],
        r#"{"name":"another","write":true}"#,
    );
    problem(&r, 404);
}

/// The `Set-Cookie` value of cookie `name` in `r`.
fn cookie_in(r: &Response, name: &str) -> Option<String> {
    set_cookie(r, name).map(cookie_value)
}

#[test]
fn a_script_logs_in_and_out_with_json_and_the_csrf_header() {
    let (w, _) = site_with_ann();
    let s = &w.server;
    let json = ("Content-Type", "application/json");

    // The log-in form's JSON carries the CSRF token (its cookie is
    // HttpOnly), in its data and in a header.
    let r = s.get("/api/login");
    assert_eq!(r.status, 200, "{}", r.text());
    let form = json_of(&r);
    let csrf = form["csrf_token"].as_str().expect("a token").to_string();
    assert_eq!(r.header("x-csrf-token"), Some(csrf.as_str()));
    assert_eq!(
        cookie_in(&r, "mantissa_csrf").as_deref(),
        Some(csrf.as_str())
    );
    let cookie = format!("mantissa_csrf={csrf}");
    let before = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        json,
    ];

    // A wrong password: 401, a problem that says so, no session.
    let r = request(
        s,
        "POST",
        "/api/login",
        &before,
        r#"{"who":"ann","password":"not it"}"#,
    );
    assert!(problem(&r, 401).contains("wrong user name or password"));
    assert!(cookie_in(&r, "mantissa_session").is_none());
    // Without the token: refused, whatever the password.
    let r = request(
        s,
        "POST",
        "/api/login",
        &[("Cookie", cookie.as_str()), json],
        r#"{"who":"ann","password":"ann's long password"}"#,
    );
    problem(&r, 403);

    // Right: who is signed in and where a browser would go, a session
    // cookie, and a new CSRF token (the old one stops working).
    let r = request(
        s,
        "POST",
        "/api/login",
        &before,
        r#"{"who":"ann","password":"ann's long password","remember":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = json_of(&r);
    assert_eq!(answer["user"], "ann", "{answer}");
    assert!(
        answer["next"]
            .as_str()
            .is_some_and(|n| n.starts_with("/private/")),
        "{answer}"
    );
    let session = cookie_in(&r, "mantissa_session").expect("a session cookie");
    let fresh = r
        .header("x-csrf-token")
        .expect("a new CSRF token")
        .to_string();
    assert_ne!(fresh, csrf);
    assert_eq!(
        cookie_in(&r, "mantissa_csrf").as_deref(),
        Some(fresh.as_str())
    );
    let cookies = format!("mantissa_session={session}; mantissa_csrf={fresh}");
    let signed_in = [
        ("Cookie", cookies.as_str()),
        ("X-CSRF-Token", fresh.as_str()),
        json,
    ];
    let r = request(s, "GET", "/api/private/settings", &signed_in, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["user"], "ann");

    // Log-out: JSON, and the session is gone for good.
    let r = request(s, "POST", "/api/logout", &signed_in, "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r), json!({ "user": null }));
    let r = request(s, "GET", "/api/private/settings", &signed_in, "");
    problem(&r, 401);
}

#[test]
fn an_administrator_s_script_manages_users_with_json() {
    let (w, ann_token) = site_with_ann();
    let s = &w.server;
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let root = mantissa_accounts::tokens::create(&s.site, "root", "script", true).unwrap();
    let auth = format!("Bearer {root}");
    let as_root = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];

    // Created: 201, the new user, where its page is.
    let r = request(
        s,
        "POST",
        "/api/admin/users",
        &as_root,
        r#"{"username":"bea","email":"bea@example.org"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(json_of(&r)["username"], "bea");
    assert_eq!(r.header("location"), Some("/api/admin/users/bea"));
    let r = request(s, "GET", "/api/admin/users/bea", &as_root, "");
    assert_eq!(json_of(&r)["account"]["username"], "bea", "{}", r.text());
    // Deleted, then the name made again: a new account, with nothing of
    // the old one (its address is free again too).
    let r = request(s, "POST", "/api/admin/users/bea/delete", &as_root, "");
    assert_eq!(json_of(&r), json!({ "username": "bea", "done": "deleted" }));
    problem(
        &request(s, "GET", "/api/admin/users/bea", &as_root, ""),
        404,
    );
    let r = request(
        s,
        "POST",
        "/api/admin/users",
        &as_root,
        r#"{"username":"bea","email":"bea@example.org"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // The same name again: a conflict that says so.
    let r = request(
        s,
        "POST",
        "/api/admin/users",
        &as_root,
        r#"{"username":"bea","email":"other@example.org"}"#,
    );
    assert!(problem(&r, 409).contains("The user name bea is taken"));
    // A bad address: 422, saying what is wrong with it.
    let r = request(
        s,
        "POST",
        "/api/admin/users",
        &as_root,
        r#"{"username":"cy","email":"no address"}"#,
    );
    assert!(!problem(&r, 422).contains("refused"));

    // Suspended, and back: what was done, as data.
    let r = request(s, "POST", "/api/admin/users/ann/suspend", &as_root, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json_of(&r),
        json!({ "username": "ann", "done": "suspended" })
    );
    // Her token stops working at once.
    let r = with_token(s, &ann_token, "GET", "/api/private/notes", "");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request(s, "POST", "/api/admin/users/ann/unsuspend", &as_root, "");
    assert_eq!(json_of(&r)["done"], "unsuspended");
    // Not possible to the account as it is: 409; nobody there: 404.
    problem(
        &request(s, "POST", "/api/admin/users/root/delete", &as_root, ""),
        409,
    );
    problem(
        &request(s, "POST", "/api/admin/users/nobody/suspend", &as_root, ""),
        404,
    );

    // How people join, as JSON; a way that does not exist is refused.
    let r = request(
        s,
        "POST",
        "/api/admin/signup",
        &as_root,
        r#"{"mechanism":"approval"}"#,
    );
    assert_eq!(
        json_of(&r),
        json!({ "mechanism": "approval" }),
        "{}",
        r.text()
    );
    problem(
        &request(
            s,
            "POST",
            "/api/admin/signup",
            &as_root,
            r#"{"mechanism":"party"}"#,
        ),
        400,
    );
    // What accounts get, as a JSON array.
    let r = request(
        s,
        "POST",
        "/api/admin/products/approval",
        &as_root,
        r#"{"offering":["notes"]}"#,
    );
    assert_eq!(
        json_of(&r),
        json!({ "joined_by": "approval", "offerings": ["notes"] }),
        "{}",
        r.text()
    );

    // Every action is in the audit log, which reads as JSON too.
    let log = json_of(&request(s, "GET", "/api/admin/logs", &as_root, ""));
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["create", "suspend", "unsuspend", "signup", "product"] {
        assert!(actions.contains(&action), "{action}: {log}");
    }

    // Another user (ann, with a new token since her suspension revoked
    // the old one for good) is told nothing is there; nobody is told to
    // sign in first.
    let ann_token = mantissa_accounts::tokens::create(&s.site, "ann", "again", true).unwrap();
    let ann_auth = format!("Bearer {ann_token}");
    problem(
        &request(
            s,
            "POST",
            "/api/admin/users",
            &[
                ("Authorization", ann_auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            r#"{"username":"eve","email":"eve@example.org"}"#,
        ),
        404,
    );
    assert!(problem(&request(s, "GET", "/api/admin/users", &[], ""), 401).contains("Sign in"));
}
