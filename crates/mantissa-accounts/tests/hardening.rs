//! Issue 13's hardening items that need accounts, over HTTP against a real
//! server on loopback: what a signed-in user's browser is told to keep,
//! the session cookie, one-time links that act only on a POST, and the
//! admin console's messages.

mod support;

use support::{logged_in, world};

/// Item 17: pages behind a log-in were sent `no-cache` with an ETag, so
/// after log-out Back showed them from the browser's cache.
#[test]
fn pages_behind_a_log_in_are_sent_private_no_store() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("root", None, Some("root's long password"), true)
        .unwrap();
    let s = &w.server;
    let mut root = logged_in(s, "root", "root's long password");
    for path in [
        "/private/notes",
        "/private/settings",
        "/api/private/notes",
        "/admin",
        "/api/admin",
    ] {
        let r = root.get(s, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("private, no-store"),
            "{path}"
        );
        assert!(r.header("etag").is_none(), "{path}");
        // Nothing to revalidate against: a stored copy would be the
        // problem, so the page is always sent whole.
        let again = s.get_with(path, &[("Cookie", &root.header()), ("If-None-Match", "*")]);
        assert_eq!(again.status, 200, "{path}");
    }
}
