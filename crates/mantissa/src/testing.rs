//! Testing an application: its offerings served by a real site on
//! 127.0.0.1, and a browser-like client that keeps cookies and fills in
//! forms (with their CSRF token) the way a person's browser does.
//!
//! Enabled by the `testing` feature, for an application's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! mantissa = { version = "…", features = ["testing"] }
//! ```
//!
//! The site is the one `mantissa serve` runs, built by the same function
//! ([`cli::site_app`](crate::cli::site_app)): Mantissa's own pages and
//! the accounts' (log-in, settings), the offerings given, the accounts'
//! access policy and API tokens. Its folder is a temporary one, removed when
//! the [`TestSite`] is dropped; mail goes to an SMTP server on loopback that
//! keeps what it receives ([`TestSite::mail`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use mantissa::testing::TestSite;
//!
//! # struct Books;
//! # impl mantissa::web::Offering for Books { fn name(&self) -> &'static str { "books" } }
//! let site = TestSite::start(vec![Arc::new(Books)]);
//! site.add_user("ann", "ann's long password");
//! let mut ann = site.log_in("ann", "ann's long password");
//! let page = ann.get("/private/books/");
//! assert_eq!(page.status, 200);
//! ```

use std::sync::Arc;

use mantissa_accounts::Accounts;
use mantissa_mail::{MailQueue, QueueSettings, QueueThread, SmtpRelay};
use mantissa_server::{Guard, Limits};
use mantissa_store::Site;
use mantissa_testkit::{TestServer, Visitor};
use mantissa_web::Offering;

pub use mantissa_testkit::{Response, SmtpSink, dkim_verifies, shown};

/// A site serving an application's offerings on 127.0.0.1, for tests.
pub struct TestSite {
    /// The site's mail queue, running; first, so that it stops before the
    /// server's folder goes.
    _mail_runner: QueueThread,
    server: TestServer,
    accounts: Arc<Accounts>,
    smtp: SmtpSink,
}

impl TestSite {
    /// Serves `offerings` (and Mantissa's own pages) on a new site, with
    /// sign-up open.
    ///
    /// # Panics
    ///
    /// When the site cannot be created or served: a test cannot go on.
    pub fn start(offerings: Vec<Arc<dyn Offering>>) -> TestSite {
        let smtp = SmtpSink::start();
        let dir = tempfile::tempdir().expect("a temporary folder for the site");
        let site = Site::open(dir.path().join("site")).expect("a new site");
        // Mail goes through the site's queue, as `mantissa serve` sends it.
        let relay = SmtpRelay::new("127.0.0.1", smtp.addr.port(), false);
        let queue = MailQueue::new(site.clone(), relay, QueueSettings::default());
        let mail_runner = queue
            .run_in_thread(std::time::Duration::from_secs(1))
            .expect("a thread for the mail queue");
        let accounts = Arc::new(Accounts::new(
            site.clone(),
            Arc::new(queue),
            "site@example.org",
            "http://placeholder",
        ));
        accounts
            .set_signup_mechanism("open")
            .expect("sign-up opens");
        let guard = Guard::new(Limits::default());
        let (app, router) = crate::cli::site_app(&site, &accounts, &guard, &offerings, false)
            .expect("the site's web application");
        let server = TestServer::serve(dir, site, app, router, guard);
        accounts.set_base_url(&format!("http://{}", server.addr));
        TestSite {
            _mail_runner: mail_runner,
            server,
            accounts,
            smtp,
        }
    }

    /// The site's stores.
    pub fn site(&self) -> &Site {
        &self.server.site
    }

    /// The address served, like `127.0.0.1:40123`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// The accounts service, for what a test sets up without a page.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// Creates an active account `name` whose store has the site's
    /// offerings installed, as an administrator's `mantissa user add` does.
    ///
    /// # Panics
    ///
    /// When the account cannot be created (a taken name, a short password).
    pub fn add_user(&self, name: &str, password: &str) {
        self.accounts
            .create_user(name, None, Some(password), false)
            .unwrap_or_else(|e| panic!("creating the account {name}: {e}"));
    }

    /// A visitor who is not signed in.
    pub fn visitor(&self) -> Browser<'_> {
        Browser {
            site: self,
            visitor: Visitor::default(),
        }
    }

    /// A visitor who is not signed in, whose requests come from `ip`, an
    /// address in 127.0.0.0/8 (the site sees each as another client: an
    /// attacker with many addresses).
    ///
    /// # Panics
    ///
    /// When `ip` is not an IP address.
    pub fn visitor_at(&self, ip: &str) -> Browser<'_> {
        Browser {
            site: self,
            visitor: Visitor::at(ip),
        }
    }

    /// A visitor who has logged in as `name` through the log-in form.
    ///
    /// # Panics
    ///
    /// When the log-in form does not let them in.
    pub fn log_in(&self, name: &str, password: &str) -> Browser<'_> {
        let mut b = self.visitor();
        let r = b.submit("/login", "/login", &[("who", name), ("password", password)]);
        assert_eq!(r.status, 303, "{name} logs in: {}", r.text());
        b
    }

    /// The mails sent so far, each as its raw text (headers and body),
    /// once the site's mail queue has sent all it can (waiting up to 5 s).
    pub fn mail(&self) -> Vec<String> {
        let start = std::time::Instant::now();
        let due = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .and_then(|rt| rt.block_on(mantissa_mail::admin::due_now(self.site())).ok())
                .unwrap_or(0)
        };
        while due() > 0 && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.smtp.messages().into_iter().map(|m| m.data).collect()
    }
}

/// One visitor's browser: cookies kept from answer to answer, forms sent
/// with the CSRF token of the page they are on.
pub struct Browser<'s> {
    site: &'s TestSite,
    visitor: Visitor,
}

impl Browser<'_> {
    /// Loads `path` (like `/private/books/`, or `/api/private/books` for
    /// its JSON).
    pub fn get(&mut self, path: &str) -> Response {
        self.visitor.get(&self.site.server, path)
    }

    /// Fills in the form on `form_page` and sends `fields` to `action`, as
    /// a person does: loads the page first, for its CSRF token.
    pub fn submit(&mut self, form_page: &str, action: &str, fields: &[(&str, &str)]) -> Response {
        self.visitor
            .submit(&self.site.server, form_page, action, fields)
    }
}
