//! A site with accounts, served on loopback, sending mail to an SMTP sink.

#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use mantissa_accounts::{Accounts, SettingsOffering, SharePolicy, TokenAuthenticator};
use mantissa_mail::{MailQueue, QueueSettings, QueueThread, SmtpRelay};
use mantissa_server::{Guard, Limits};
use mantissa_testkit::notes::Notes;
use mantissa_testkit::*;
use mantissa_web::{App, WebOptions};

pub struct World {
    /// The site's mail queue, running; first, so that it stops before the
    /// server's folder goes.
    pub mail_runner: QueueThread,
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
    let port = smtp.addr.port();
    world_mailing_to(from, smtp, port, false, configure)
}

/// A world with no relay, as in development: its mail is written to the
/// outbox folder `<site>/outbox` (the queue runs, and has nothing to do).
pub fn world_with_outbox(configure: impl FnOnce(Accounts) -> Accounts) -> World {
    let smtp = SmtpSink::start();
    let port = smtp.addr.port();
    world_mailing_to(None, smtp, port, true, configure)
}

/// A world whose mail server is down: its mail goes to a closed port (the
/// sink is there, and receives nothing).
pub fn world_without_mail(configure: impl FnOnce(Accounts) -> Accounts) -> World {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    world_mailing_to(None, SmtpSink::start(), port, false, configure)
}

fn world_mailing_to(
    from: Option<&std::path::Path>,
    smtp: SmtpSink,
    port: u16,
    outbox: bool,
    configure: impl FnOnce(Accounts) -> Accounts,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    if let Some(from) = from {
        copy_dir(from, &dir.path().join("site"));
    }
    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    // Mail goes through the site's queue, as `mantissa serve` sends it.
    let relay = SmtpRelay::new("127.0.0.1", port, false);
    let queue = MailQueue::new(site.clone(), relay, QueueSettings::default());
    let mail_runner = queue
        .run_in_thread(std::time::Duration::from_secs(1))
        .unwrap();
    let mailer: Arc<dyn mantissa_mail::Mailer> = if outbox {
        Arc::new(mantissa_mail::Outbox::for_site(
            site.root().join("outbox"),
            site.clone(),
        ))
    } else {
        Arc::new(queue)
    };
    let accounts = Arc::new(configure(Accounts::new(
        site.clone(),
        mailer,
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
        mail_runner,
        server,
        smtp,
        accounts,
    }
}

impl World {
    /// The mail the sink has received once the site's queue has sent all
    /// it can (waiting up to 5 s for it): what a test counts, so that a
    /// message still on its way is not missed.
    pub fn settled_mail(&self) -> Vec<mantissa_testkit::smtp::Received> {
        let start = std::time::Instant::now();
        while block_on(mantissa_mail::admin::due_now(&self.server.site)).unwrap() > 0
            && start.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.smtp.messages()
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

/// Seconds since the epoch (for TOTP codes).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs one of the accounts' async calls from a test's thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Turns two-factor log-in on for `user` (as its settings page does, with
/// the code of this time step); returns the secret.
pub fn enable_totp(accounts: &Accounts, user: &str) -> String {
    let (secret, _) = block_on(accounts.totp_begin(user, "Mantissa")).unwrap();
    let code = mantissa_accounts::totp::code_at(&secret, now()).unwrap();
    block_on(accounts.totp_set(user, &code, true)).unwrap();
    secret
}

/// The code of the time step after this one: one no log-in has used yet
/// (the step of [`enable_totp`] is used), and still accepted (one step of
/// drift either way is).
pub fn next_code(secret: &str) -> String {
    mantissa_accounts::totp::code_at(secret, now() + 30).unwrap()
}

/// A visitor logged in through the /login form with a second-factor code.
pub fn logged_in_with_code(s: &TestServer, who: &str, password: &str, code: &str) -> Visitor {
    let mut v = Visitor::default();
    let r = v.submit(
        s,
        "/login",
        "/login",
        &[("who", who), ("password", password), ("code", code)],
    );
    assert_eq!(r.status, 303, "{who} logs in: {}", r.text());
    v
}

/// Sends a request with an API token in place of a session.
pub fn with_token(s: &TestServer, token: &str, method: &str, path: &str, body: &str) -> Response {
    s.send(&format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Makes an API token for the signed-in `v` on the settings page.
pub fn make_token(s: &TestServer, v: &mut Visitor, name: &str, write: bool) -> String {
    let mut fields = vec![("name", name)];
    if write {
        fields.push(("write", "1"));
    }
    let page = v
        .submit(s, "/private/settings", "/private/settings/tokens", &fields)
        .text();
    page.split("id=\"new-token\" readonly value=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no token shown: {page}"))
        .split('"')
        .next()
        .unwrap()
        .to_string()
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
