//! What every page's layout shows around the page itself: the navigation
//! (the signed-in user's applications, Settings, Admin, Log out; Log in and
//! Sign up for visitors), and the line saying what the last form did.
//!
//! Who has which applications, who is an administrator and whether
//! sign-up is open is known to the accounts, a layer above this one: they
//! install a [`Navigation`] with [`App::set_navigation`]. Without one,
//! every signed-in user sees every switched-on offering that has a
//! [label](crate::Offering::label).
//!
//! # What happened: `?done=KEY`
//!
//! A form posts, then redirects (POST-redirect-GET) to a page whose
//! address ends in `?done=KEY`; the layout shows that key's message at the
//! top of the page (`done` in templates). The keys are a fixed list —
//! [`MESSAGES`], and each offering's [`messages`](crate::Offering::messages)
//! — so a link someone else wrote can only ever show one of the site's own
//! sentences, never text from the URL. [`done`] makes the redirect.

use std::future::Future;
use std::pin::Pin;

use axum::response::Redirect;
use serde::Serialize;

use crate::app::App;
use crate::offering::OfferingState;

/// One link of the navigation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MenuLink {
    /// What the link says.
    pub label: String,
    /// Where it goes (a path of this site).
    pub href: String,
}

/// What the navigation shows for one visitor.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Menu {
    /// The signed-in user's applications, in the order they are linked.
    pub apps: Vec<MenuLink>,
    /// Whether the signed-in user is an administrator (an Admin link).
    pub admin: bool,
    /// For visitors: whether anyone may sign up (a Sign up link).
    pub signup_open: bool,
}

/// A boxed future of a [`Menu`].
pub type MenuFuture = Pin<Box<dyn Future<Output = Menu> + Send>>;

/// Decides what the navigation shows; see the module documentation.
pub trait Navigation: Send + Sync + 'static {
    /// The menu for `user` (none: a visitor). Failures show a smaller
    /// menu (and are logged), never an error page.
    fn menu(&self, app: App, user: Option<String>) -> MenuFuture;

    /// What the front page of a new site tells its administrator to do
    /// next, if it tells `user` (none: a visitor) anything.
    fn first_run(&self, app: App, user: Option<String>) -> FirstRunFuture {
        let _ = (app, user);
        Box::pin(async { None })
    }
}

/// A boxed future of a [`FirstRun`].
pub type FirstRunFuture = Pin<Box<dyn Future<Output = Option<FirstRun>> + Send>>;

/// The front page of a new site: what its administrator does next.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FirstRun {
    /// The administrator's user name.
    pub admin: String,
    /// Whether the administrator has set a password (until then, anyone
    /// who opens the site sees these steps: there is nobody else yet).
    pub password_set: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step of a [`FirstRun`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Step {
    /// What to do, in a few words.
    pub title: String,
    /// How, in a sentence or two.
    pub text: String,
    /// A command to type, if the step is done on the command line.
    pub command: Option<String>,
    /// A page of the site where it is done, if any.
    pub href: Option<String>,
    /// Whether it is done.
    pub done: bool,
}

/// The navigation without accounts: every switched-on offering with a
/// label, for whoever is signed in.
pub struct EveryOffering;

impl Navigation for EveryOffering {
    fn menu(&self, app: App, user: Option<String>) -> MenuFuture {
        Box::pin(async move {
            if user.is_none() {
                return Menu::default();
            }
            let names: Vec<String> = app
                .offerings()
                .iter()
                .map(|o| o.name().to_string())
                .collect();
            Menu {
                apps: applications(&app, &names).await,
                ..Menu::default()
            }
        })
    }
}

/// The links to the offerings called `names` (in that order) that have a
/// [label](crate::Offering::label) and are switched on for the site.
pub async fn applications(app: &App, names: &[String]) -> Vec<MenuLink> {
    // Every page builds this: the switched-off offerings in one read, not
    // a read for each offering.
    let off = app
        .site()
        .store()
        .read(|r| {
            r.query::<OfferingState>()
                .filter(OfferingState::enabled.eq(false))
                .column(OfferingState::name)
        })
        .await;
    let off = match off {
        Ok(off) => off,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell which offerings are on");
            return Vec::new();
        }
    };
    names
        .iter()
        .filter_map(|name| {
            let o = app.offering(name)?;
            let label = o.label()?;
            // A core offering is always on (`offering_is_enabled`).
            (o.core() || !off.contains(name)).then(|| MenuLink {
                label: label.to_string(),
                href: format!("/private/{name}"),
            })
        })
        .collect()
}

/// Mantissa's own messages, by key: what a platform form did.
pub const MESSAGES: &[(&str, &str)] = &[
    ("logged-in", "You are logged in."),
    ("logged-out", "You have logged out."),
    (
        "password-changed",
        "Password changed. Your other sessions have ended.",
    ),
    (
        "email-link-sent",
        "We sent a link to the new address. Your address changes when you follow it.",
    ),
    ("email-changed", "Your email address was changed."),
    ("totp-on", "Two-factor log-in is on."),
    ("totp-off", "Two-factor log-in is off."),
    (
        "totp-cancelled",
        "Two-factor set-up was cancelled; log-in is as before.",
    ),
    ("passkey-added", "Your passkey was added."),
    ("passkey-removed", "The passkey was removed."),
    (
        "token-revoked",
        "The token was revoked: apps and scripts using it can no longer get in.",
    ),
    (
        "signup-sent",
        "We sent you a link. Follow it to activate your account.",
    ),
    (
        "email-verified",
        "Your email address is verified. Log in to start.",
    ),
    (
        "verified-waiting",
        "Your email address is verified. An administrator will approve your account; you can log in once they have.",
    ),
    (
        "reset-sent",
        "If an account has this address, we sent it a link to choose a new password.",
    ),
    (
        "password-set",
        "Your new password is set, and every session of your account has ended. Log in with it.",
    ),
    (
        "unlocked",
        "Your account is unlocked. You can log in again.",
    ),
];

/// The message of `key`: Mantissa's own, or one an offering declared.
pub fn message(app: &App, key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return None;
    }
    if let Some((_, m)) = MESSAGES.iter().find(|(k, _)| *k == key) {
        return Some(m);
    }
    app.offerings()
        .iter()
        .flat_map(|o| o.messages())
        .find(|(k, _)| *k == key)
        .map(|(_, m)| m)
}

/// A redirect to `path` that says what happened: `path?done=KEY` (or
/// `&done=KEY` when `path` has a query). `key` must be one of the
/// [`MESSAGES`] or an offering's [`messages`](crate::Offering::messages).
///
/// ```
/// let r = mantissa_web::done("/private/settings", "password-changed");
/// # let _ = r;
/// ```
pub fn done(path: &str, key: &str) -> Redirect {
    Redirect::to(&done_url(path, key))
}

/// The address [`done`] redirects to. A fragment stays at the end.
///
/// ```
/// assert_eq!(mantissa_web::done_url("/a#b", "x"), "/a?done=x#b");
/// assert_eq!(mantissa_web::done_url("/a?p=2", "x"), "/a?p=2&done=x");
/// ```
pub fn done_url(path: &str, key: &str) -> String {
    let (path, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}done={key}");
    if let Some(f) = fragment {
        url.push('#');
        url.push_str(f);
    }
    url
}

/// The `done` key of a query string, if any. Keys are plain words: a
/// value that would need decoding is no key of ours, and is compared as
/// it is (so matches none).
pub(crate) fn done_key(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("done="))
        .map(str::to_string)
}
