//! A site with accounts, served on loopback, sending mail to an SMTP sink.

#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use mantissa_accounts::{Accounts, SettingsOffering, SharePolicy, TokenAuthenticator};
use mantissa_mail::SmtpRelay;
use mantissa_server::{Guard, Limits};
use mantissa_store::Site;
use mantissa_testkit::notes::Notes;
use mantissa_testkit::*;
use mantissa_web::{App, WebOptions};

pub struct World {
    pub server: TestServer,
    pub smtp: SmtpSink,
    pub accounts: Arc<Accounts>,
}

pub fn world(configure: impl FnOnce(Accounts) -> Accounts) -> World {
    world_from(None, configure)
}

/// A world on a copy of the site folder `from` (tests/resources/…), or on a
/// new site.
pub fn world_from(
    from: Option<&std::path::Path>,
    configure: impl FnOnce(Accounts) -> Accounts,
) -> World {
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    if let Some(from) = from {
        copy_dir(from, &dir.path().join("site"));
    }
    let site = Site::open(dir.path().join("site")).unwrap();
    let relay = SmtpRelay::new("127.0.0.1", smtp.addr.port(), false);
    let accounts = Arc::new(configure(Accounts::new(
        site.clone(),
        Arc::new(relay),
        "site@example.org",
        "http://placeholder",
    )));
    accounts.set_signup_mechanism("open").unwrap();
    let guard = Guard::new(Limits::default());
    let app = App::new(
        site.clone(),
        guard.clone(),
        WebOptions {
            offerings: vec![
                Arc::new(SettingsOffering::new(accounts.clone())),
                Arc::new(Notes),
            ],
            access: Some(Arc::new(SharePolicy::new(site.clone()))),
            tokens: Some(Arc::new(TokenAuthenticator::new(site.clone()))),
            ..WebOptions::default()
        },
    )
    .unwrap();
    let router = app.router_with(mantissa_accounts::routes(&app, accounts.clone()));
    let server = TestServer::serve(dir, site, app, router, guard);
    accounts.set_base_url(&format!("http://{}", server.addr));
    World {
        server,
        smtp,
        accounts,
    }
}

/// A visitor who has logged in as `who` through the /login form.
pub fn logged_in(s: &TestServer, who: &str, password: &str) -> Visitor {
    let mut v = Visitor::default();
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[("who", who), ("password", password)],
    );
    assert_eq!(r.status, 303, "{who} logs in: {}", r.text());
    v
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
