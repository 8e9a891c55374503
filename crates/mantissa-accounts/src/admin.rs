//! The administrator's console at `/admin`, in sections with pages of
//! their own: the overview (figures and charts of the site's activity),
//! users (a paged, sortable, filterable list, and a page per user), sign-up
//! (how people join, and what new accounts get), offerings, mail (where it
//! comes from, its texts, the outbound queue with its Retry and Drop
//! actions, and the delivery history, through [`mantissa_mail::admin`] as
//! `mantissa mail queue` uses it), ports, and the log of administrative
//! actions. Anyone who is not a signed-in
//! administrator gets 404, as for anything they may not see.
//!
//! An action is a POST (with the CSRF token every form has) that ends on
//! the section it was taken from, with a message saying what was done. The
//! redirect carries only a key from a fixed list ([`Done`]) and the name of
//! what it was done to, and the page shows a message only when that name
//! is one it knows (an account, an offering, a way of joining): never text
//! from the URL, which anyone can write into a link to the console. A
//! refused action answers with its reason on an error page instead.
//!
//! Destructive actions — deleting or suspending an account, turning off
//! its two-factor log-in, switching an offering off — are links to a page
//! that asks first, whose button makes the POST; where an action can be
//! undone (a suspension, an offering switched off), the message after it
//! carries an Undo button. Every action goes into the audit log
//! ([`crate::audit`]), shown under Logs.
//!
//! The sections share one template, `accounts/admin.html`, which a theme
//! can override like any other; `section` says which part of it renders.
//!
//! Dates are shown in the viewer's terms without script: relative ("3
//! hours ago"), in a `<time>` element whose `datetime` is the exact UTC
//! time, which its `title` also shows on hover.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use mantissa_mail::admin as mail_admin;
use mantissa_mail::{MailState, QueuedMail};
use mantissa_store::Timestamp;
use mantissa_web::{
    App, JsonOrForm, Page, PageResponses, Pager, Port, Session, SessionRecord, WebError, Written,
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity::{self, Period};
use crate::audit::{self, AuditEntry};
use crate::manage::Approval;
use crate::model::{Account, EmailAddress, status};
use crate::passkeys::Passkey;
use crate::service::{AccountError, Accounts};
use crate::tokens::ApiToken;

async fn require_admin(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    req: Request,
    next: Next,
) -> Response {
    let user = req.extensions().get::<Session>().and_then(Session::user);
    let Some(name) = user else {
        return WebError::NotFound.into_response();
    };
    let is_admin = app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            Ok(r.query::<Account>()
                .filter(Account::username.eq(name))
                .first()?
                .is_some_and(|a| a.admin && a.status == status::ACTIVE))
        })
        .await;
    match is_admin {
        Ok(true) => {
            // The charts' minute task, if it could not start with the
            // routes (no runtime yet).
            acc.activity.start(app.site(), &app, &acc);
            next.run(req).await
        }
        Ok(false) => WebError::NotFound.into_response(),
        Err(e) => WebError::from(e).into_response(),
    }
}

/// The query of a console page (each section reads the parts it uses).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Search {
    /// Text to look for in names and addresses.
    #[serde(default)]
    q: String,
    /// A status to show only (`active`, `pending`, …, `locked`, `admin`).
    #[serde(default)]
    status: String,
    /// A [`SORTS`] key.
    #[serde(default)]
    sort: String,
    /// A [`Done`] key.
    #[serde(default)]
    done: String,
    /// The account, offering or way of joining it was done to.
    #[serde(default)]
    to: String,
    /// The page of a list, from 1; anything else is the first.
    #[serde(default)]
    page: String,
    /// The charts' period: `hour`, `day` or `month`.
    #[serde(default)]
    period: String,
}

/// What an action did: the key the redirect carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Signup,
    Approved,
    ApprovedUnverified,
    Suspended,
    Unsuspended,
    ResetSent,
    NoEmail,
    Deleted,
    OfferingOn,
    OfferingOff,
    ProductSaved,
    Created,
    CreatedMailFailed,
    TwoFactorOff,
    NoTwoFactor,
    MailRetried,
    MailRetriedAll,
    MailDropped,
}

impl Done {
    const ALL: [Done; 18] = [
        Done::Signup,
        Done::Approved,
        Done::ApprovedUnverified,
        Done::Suspended,
        Done::Unsuspended,
        Done::ResetSent,
        Done::NoEmail,
        Done::Deleted,
        Done::OfferingOn,
        Done::OfferingOff,
        Done::ProductSaved,
        Done::Created,
        Done::CreatedMailFailed,
        Done::TwoFactorOff,
        Done::NoTwoFactor,
        Done::MailRetried,
        Done::MailRetriedAll,
        Done::MailDropped,
    ];

    fn key(self) -> &'static str {
        match self {
            Done::Signup => "signup",
            Done::Approved => "approved",
            Done::ApprovedUnverified => "approved-unverified",
            Done::Suspended => "suspended",
            Done::Unsuspended => "unsuspended",
            Done::ResetSent => "reset-sent",
            Done::NoEmail => "no-email",
            Done::Deleted => "deleted",
            Done::OfferingOn => "offering-on",
            Done::OfferingOff => "offering-off",
            Done::ProductSaved => "product-saved",
            Done::Created => "created",
            Done::CreatedMailFailed => "created-mail-failed",
            Done::TwoFactorOff => "two-factor-off",
            Done::NoTwoFactor => "no-two-factor",
            Done::MailRetried => "mail-retried",
            Done::MailRetriedAll => "mail-retried-all",
            Done::MailDropped => "mail-dropped",
        }
    }

    fn from_key(key: &str) -> Option<Done> {
        Done::ALL.into_iter().find(|d| d.key() == key)
    }

    /// The page that says it was done to `to`.
    fn page(self, to: &str) -> String {
        let enc =
            |pairs: &[(&str, &str)]| serde_urlencoded::to_string(pairs).expect("strings encode");
        match self {
            Done::Signup | Done::ProductSaved => {
                format!("/admin/signup?{}", enc(&[("done", self.key()), ("to", to)]))
            }
            Done::OfferingOn | Done::OfferingOff => {
                format!(
                    "/admin/offerings?{}",
                    enc(&[("done", self.key()), ("to", to)])
                )
            }
            Done::Deleted => format!("/admin/users?{}", enc(&[("done", self.key())])),
            Done::MailRetried | Done::MailRetriedAll | Done::MailDropped => {
                format!("/admin/mail?{}", enc(&[("done", self.key()), ("to", to)]))
            }
            _ => format!(
                "/admin/users/{}?{}",
                path_segment(to),
                enc(&[("done", self.key())])
            ),
        }
    }
}

/// `name` written into a URL path (user names are letters, digits and a
/// few marks, but the console does not rely on that).
fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// What the console knows names in a [`Done`] message against.
struct Known<'a> {
    /// The account the message is about, with its addresses, if it exists.
    user: Option<(&'a str, &'a [String])>,
    offerings: &'a [String],
    mechanism: &'a str,
}

/// The message for `done` to `to`, if `to` is something the console knows
/// (see the module documentation).
fn done_message(done: Done, to: &str, known: &Known<'_>) -> Option<String> {
    let user = || known.user.filter(|(n, _)| *n == to).map(|(n, _)| n);
    let ways = ["open", "invitation", "approval", "created"];
    Some(match done {
        // The mechanism now in force, not the one in the URL.
        Done::Signup => format!("Sign-up is now {}.", known.mechanism),
        Done::Approved => format!("Approved {}; they were emailed.", user()?),
        Done::ApprovedUnverified => format!(
            "Approved {}; the account works once its email address is verified.",
            user()?
        ),
        Done::Suspended => format!("Suspended {}; their API tokens are revoked.", user()?),
        Done::TwoFactorOff => format!("Two-factor log-in of {} is off; they were mailed.", user()?),
        Done::NoTwoFactor => format!("{} had no two-factor log-in on.", user()?),
        Done::Unsuspended => format!("{} can log in again.", user()?),
        Done::ResetSent => format!("A reset link was emailed to {}.", user()?),
        Done::NoEmail => format!("{} has no email address to send a reset link to.", user()?),
        // The account is gone: nothing to check a name against, so none is
        // shown.
        Done::Deleted => {
            "Deleted the account; its store was exported first to the site's exports folder.".into()
        }
        Done::OfferingOn | Done::OfferingOff => {
            let name = known.offerings.iter().find(|o| *o == to)?;
            let state = if done == Done::OfferingOn {
                "on"
            } else {
                "off"
            };
            format!("{name} is now {state}.")
        }
        Done::ProductSaved => {
            let way = ways.into_iter().find(|w| *w == to)?;
            format!("Saved the product for accounts that join by {way}.")
        }
        Done::Created => {
            let (name, emails) = known.user.filter(|(n, _)| *n == to)?;
            match emails.first() {
                Some(email) => {
                    format!("Created {name}; a link to set a password was emailed to {email}.")
                }
                None => format!("Created {name}."),
            }
        }
        Done::CreatedMailFailed => format!(
            "Created {}, but the email with the link to set a password could not be sent.",
            user()?
        ),
        // Said by the mail section, which knows the queue.
        Done::MailRetried | Done::MailRetriedAll | Done::MailDropped => return None,
    })
}

/// The Undo button after `done` to `to`, where it can be undone: the
/// action's URL and the button's words.
fn undo(done: Done, to: &str) -> Option<Value> {
    let (url, label) = match done {
        Done::Suspended => (
            format!("/admin/users/{}/unsuspend", path_segment(to)),
            format!("Undo: let {to} log in again"),
        ),
        Done::OfferingOff => (
            format!("/admin/offerings/{}/on", path_segment(to)),
            format!("Undo: switch {to} back on"),
        ),
        Done::OfferingOn => (
            format!("/admin/offerings/{}/off", path_segment(to)),
            format!("Undo: switch {to} off again"),
        ),
        _ => return None,
    };
    Some(json!({ "url": url, "label": label }))
}

/// A time as the console shows it: relative to now ("3 hours ago"), with
/// the exact UTC time for the `<time>` element around it (see the module
/// documentation).
fn when(t: Timestamp, now: Timestamp) -> Value {
    json!({
        "iso": t.to_string(),
        "utc": mantissa_web::utc_minute(t),
        "ago": mantissa_web::relative_time(t, now),
    })
}

/// The status of an account, for people.
fn status_words(s: &str) -> &'static str {
    match s {
        status::ACTIVE => "Active",
        status::UNVERIFIED => "Email not verified",
        status::PENDING => "Waiting for approval",
        status::SUSPENDED => "Suspended",
        _ => "Unknown",
    }
}

/// The orders the user list can be in: key, words, and the sort.
const SORTS: [(&str, &str); 5] = [
    ("name", "Name, A to Z"),
    ("name-desc", "Name, Z to A"),
    ("newest", "Newest first"),
    ("oldest", "Oldest first"),
    ("status", "Status"),
];

/// The filters of the user list: key and words.
const FILTERS: [(&str, &str); 7] = [
    ("", "Everyone"),
    ("active", "Active"),
    ("pending", "Waiting for approval"),
    ("unverified", "Email not verified"),
    ("suspended", "Suspended"),
    ("locked", "Locked"),
    ("admin", "Administrators"),
];

/// Users on one page of the console's list (and of its JSON at
/// `/api/admin/users`): a site with a hundred thousand accounts must not
/// build them all into one answer.
const USERS_PER_PAGE: usize = 50;

/// Audit entries on one page of the log.
const ENTRIES_PER_PAGE: usize = 50;

/// The account `name` and its addresses, if it exists.
async fn account_with_emails(
    app: &App,
    name: &str,
) -> Result<Option<(mantissa_store::Stored<Account>, Vec<(String, bool)>)>, WebError> {
    let n = name.to_string();
    Ok(app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            let Some(a) = r
                .query::<Account>()
                .filter(Account::username.eq(n))
                .first()?
            else {
                return Ok(None);
            };
            let emails = r
                .query::<EmailAddress>()
                .filter(EmailAddress::account.eq(a.id()))
                .columns2(EmailAddress::address, EmailAddress::verified)?;
            Ok(Some((a, emails)))
        })
        .await?)
}

/// The message (and Undo) for `search`'s `done`, if it names something
/// known.
async fn notice_for(
    app: &App,
    acc: &Accounts,
    search: &Search,
    user: Option<&str>,
) -> Result<(Option<String>, Option<Value>), WebError> {
    let Some(done) = Done::from_key(&search.done) else {
        return Ok((None, None));
    };
    // On a user's page, the page's user; elsewhere the one named.
    let to = user.unwrap_or(&search.to).to_string();
    let about = if to.is_empty() {
        None
    } else {
        account_with_emails(app, &to).await?
    };
    let emails: Vec<String> = about
        .as_ref()
        .map(|(_, e)| e.iter().map(|(a, _)| a.clone()).collect())
        .unwrap_or_default();
    let offering_names: Vec<String> = app
        .offerings()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let mechanism = acc.signup_mechanism().await.map_err(internal)?;
    let known = Known {
        user: about
            .as_ref()
            .map(|(a, _)| (a.username.as_str(), emails.as_slice())),
        offerings: &offering_names,
        mechanism: &mechanism,
    };
    let Some(message) = done_message(done, &to, &known) else {
        return Ok((None, None));
    };
    Ok((Some(message), undo(done, &to)))
}

fn internal(e: impl std::fmt::Display) -> WebError {
    WebError::Internal(e.to_string())
}

/// A console page: `section` of `accounts/admin.html` with `data`.
fn section(section: &str, mut data: Value) -> Page {
    if let Value::Object(map) = &mut data {
        map.insert("section".into(), json!(section));
    }
    Page::new("accounts/admin.html", data)
}

/// `GET /admin`: the overview.
#[utoipa::path(get, path = "/admin", operation_id = "admin_overview", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn overview(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let (total, pending) = app
        .site()
        .store()
        .read(|r| -> mantissa_store::Result<_> {
            Ok((
                r.query::<Account>().count()?,
                r.query::<Account>()
                    .filter(Account::status.eq(status::PENDING))
                    .count()?,
            ))
        })
        .await?;
    let site = app.site().clone();
    let (stores, disk) = tokio::task::spawn_blocking(move || {
        (
            site.user_names().map(|n| n.len()).unwrap_or(0),
            site.disk_usage().unwrap_or(0),
        )
    })
    .await
    .map_err(internal)?;
    // What was counted since the last minute's write shows too.
    if let Err(e) = acc
        .activity
        .flush(app.site(), app.requests_and_errors())
        .await
    {
        tracing::warn!(error = %e, "activity not written");
    }
    let period = Period::from_key(&search.period);
    let series = activity::series(app.site(), period).await?;
    let names = [
        ("Requests", "request", "requests"),
        ("Sign-ups", "sign-up", "sign-ups"),
        ("Failed log-ins", "failed log-in", "failed log-ins"),
        ("Server errors", "server error", "server errors"),
    ];
    let charts: Vec<Value> = names
        .iter()
        .zip(series.iter())
        .map(|((title, one, many), s)| {
            let sum: i64 = s.iter().map(|(_, n)| *n).sum();
            json!({
                "title": title,
                "total": sum,
                "one": one,
                "many": many,
                "svg": activity::bar_chart(s, period, one, many),
                "series": s,
            })
        })
        .collect();
    Ok(section(
        "overview",
        json!({
            "stats": {
                "users": total, "stores": stores, "disk_bytes": disk,
                "requests_last_minute": app.requests_last_minute(), "pending": pending,
            },
            "period": period.key(),
            "periods": [["hour", "Last hour"], ["day", "Last day"], ["month", "Last month"]],
            "charts": charts,
        }),
    ))
}

/// `GET /admin/users`: the list of users.
#[utoipa::path(get, path = "/admin/users", operation_id = "admin_users", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn users(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    users_page(&app, &acc, &search, None).await
}

/// A user the "Add a user" form could not create: what was typed, and the
/// field (`username` or `email`) and words of the refusal, shown beside it.
struct NotCreated {
    typed: NewUser,
    field: &'static str,
    message: String,
    status: mantissa_web::StatusCode,
}

/// The users section, with the "Add a user" form shown again when
/// `not_created`.
async fn users_page(
    app: &App,
    acc: &Accounts,
    search: &Search,
    not_created: Option<NotCreated>,
) -> Result<Page, WebError> {
    let q = search.q.trim().to_lowercase();
    let page = Pager::page_from(&search.page);
    let sort = SORTS
        .iter()
        .find(|(k, _)| *k == search.sort)
        .map_or("name", |(k, _)| *k);
    let filter = FILTERS
        .iter()
        .find(|(k, _)| *k == search.status)
        .map_or("", |(k, _)| *k);
    let (notice, undo) = notice_for(app, acc, search, None).await?;
    let now = Timestamp::now();
    let (users, matched) = app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            let base = || {
                let mut query = r.query::<Account>();
                query = match filter {
                    "" => query,
                    "locked" => query.filter(Account::locked.eq(true)),
                    "admin" => query.filter(Account::admin.eq(true)),
                    s => query.filter(Account::status.eq(s.to_string())),
                };
                match sort {
                    "name-desc" => query.order_by(Account::username.desc()),
                    "newest" => query.order_by(Account::created.desc()),
                    "oldest" => query.order_by(Account::created.asc()),
                    "status" => query
                        .order_by(Account::status.asc())
                        .order_by(Account::username.asc()),
                    _ => query.order_by(Account::username.asc()),
                }
            };
            let skip = Pager::skip(page, USERS_PER_PAGE);
            let (accounts, matched) = if q.is_empty() {
                let matched = base().count()? as usize;
                let accounts = base()
                    .limit(USERS_PER_PAGE as u64)
                    .offset(skip as u64)
                    .all()?
                    .into_iter()
                    .map(|a| {
                        r.query::<EmailAddress>()
                            .filter(EmailAddress::account.eq(a.id()))
                            .column(EmailAddress::address)
                            .map(|e| (a, e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (accounts, matched)
            } else {
                // Every address in one query, not one query an account.
                let mut all_emails: std::collections::HashMap<i64, Vec<String>> =
                    std::collections::HashMap::new();
                for (account, address) in r
                    .query::<EmailAddress>()
                    .columns2(EmailAddress::account, EmailAddress::address)?
                {
                    all_emails.entry(account.id()).or_default().push(address);
                }
                let mut matched = 0;
                let mut accounts = Vec::new();
                for a in base().all()? {
                    let emails = all_emails.remove(&a.id().id()).unwrap_or_default();
                    if a.username.contains(&q) || emails.iter().any(|e| e.contains(&q)) {
                        if matched >= skip && accounts.len() < USERS_PER_PAGE {
                            accounts.push((a, emails));
                        }
                        matched += 1;
                    }
                }
                (accounts, matched)
            };
            let out: Vec<Value> = accounts
                .into_iter()
                .map(|(a, emails)| {
                    json!({
                        "username": a.username, "admin": a.admin, "status": a.status,
                        "status_words": status_words(&a.status), "locked": a.locked,
                        "emails": emails, "created": when(a.created, now),
                    })
                })
                .collect();
            Ok((out, matched))
        })
        .await?;
    // The pager's links keep the search, the filter and the order.
    let keep =
        serde_urlencoded::to_string([("q", search.q.as_str()), ("status", filter), ("sort", sort)])
            .expect("strings encode");
    let (new_user, new_error) = match &not_created {
        Some(n) => (
            json!({ "username": n.typed.username, "email": n.typed.email }),
            json!({ n.field: n.message }),
        ),
        None => (json!({}), json!({})),
    };
    let page = section(
        "users",
        json!({
            "new_user": new_user,
            "new_error": new_error,
            "q": search.q,
            "status": filter,
            "sort": sort,
            "sorts": SORTS,
            "filters": FILTERS,
            "keep": keep,
            "searched": !search.q.trim().is_empty() || !filter.is_empty(),
            "notice": notice,
            "undo": undo,
            "users": users,
            "pager": Pager::new(page, matched, USERS_PER_PAGE),
        }),
    );
    Ok(match not_created {
        Some(n) => page.refused(n.status, n.message),
        None => page,
    })
}

/// The actions an administrator can take on `a` from its page: key, the
/// button's words, and whether it asks first. None that would lock the
/// administrator out.
fn actions_for(a: &Account, me: &str) -> Vec<Value> {
    let myself = a.username == me;
    let mut actions = vec![];
    match a.status.as_str() {
        status::PENDING => actions.push(("approve", "Approve", false)),
        status::SUSPENDED => actions.push(("unsuspend", "Unsuspend", false)),
        _ if !myself => actions.push(("suspend", "Suspend", true)),
        _ => {}
    }
    actions.push(("reset", "Email a password reset link", false));
    if a.totp_enabled {
        // For someone who lost their authenticator; the owner is mailed.
        actions.push(("two-factor-off", "Turn off two-factor log-in", true));
    }
    if !myself {
        actions.push(("delete", "Delete the account", true));
    }
    actions
        .into_iter()
        .map(|(key, label, confirm)| json!({ "key": key, "label": label, "confirm": confirm }))
        .collect()
}

/// `GET /admin/users/{name}`: one user.
#[utoipa::path(get, path = "/admin/users/{name}", operation_id = "admin_user", tag = "admin",
    params(("name" = String, Path, description = "The user name"), Search),
    security(("token" = [])), responses(PageResponses))]
async fn user_page(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let me = session.user().unwrap_or_default();
    let Some((account, emails)) = account_with_emails(&app, &name).await? else {
        return Err(WebError::NotFound);
    };
    let (notice, undo) = notice_for(&app, &acc, &search, Some(&name)).await?;
    let now = Timestamp::now();
    let id = account.id();
    let n = name.clone();
    let (sessions, passkeys, tokens) = app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            let sessions = r
                .query::<SessionRecord>()
                .filter(SessionRecord::user.eq(n))
                .filter(SessionRecord::expires.gt(now))
                .order_by(SessionRecord::created.desc())
                .all()?;
            let passkeys = r.query::<Passkey>().filter(Passkey::account.eq(id)).all()?;
            let tokens = r
                .query::<ApiToken>()
                .filter(ApiToken::account.eq(id))
                .count()?;
            Ok((sessions, passkeys, tokens))
        })
        .await?;
    let site = app.site().clone();
    let n = name.clone();
    let store = tokio::task::spawn_blocking(move || -> Option<(String, u64)> {
        if !site.has_user_store(&n).ok()? {
            return None;
        }
        let store = site.user_store(&n).ok()?;
        let bytes = store.bytes().ok()?;
        Some((store.whereabouts(), bytes))
    })
    .await
    .map_err(internal)?;
    let last_login = sessions.first().map(|s| when(s.created, now));
    Ok(section(
        "user",
        json!({
            "notice": notice,
            "undo": undo,
            // Not `user`: pages have that already, the signed-in user.
            "account": {
                "username": account.username,
                "admin": account.admin,
                "status": account.status,
                "status_words": status_words(&account.status),
                "locked": account.locked,
                "two_factor": account.totp_enabled,
                "joined_by": account.joined_by,
                "created": when(account.created, now),
                "emails": emails.iter().map(|(a, v)| json!({ "address": a, "verified": v })).collect::<Vec<_>>(),
                "store": store.map(|(path, bytes)| json!({ "path": path, "bytes": bytes })),
                "sessions": sessions.iter().map(|s| json!({ "created": when(s.created, now), "expires": when(s.expires, now) })).collect::<Vec<_>>(),
                "last_login": last_login,
                "passkeys": passkeys.iter().map(|p| json!({
                    "name": p.name, "created": when(p.created, now),
                    "last_used": p.last_used.map(|t| when(t, now)),
                })).collect::<Vec<_>>(),
                "tokens": tokens,
                "actions": actions_for(&account, &me),
            },
        }),
    ))
}

/// What a destructive action asks before it is taken.
fn confirmation(action: &str, name: &str) -> Option<(String, String, String)> {
    Some(match action {
        "delete" => (
            format!("Delete {name}?"),
            format!(
                "The account {name} and its store are deleted; the store is exported first to the site's exports folder. This cannot be undone from the console."
            ),
            format!("Delete {name}"),
        ),
        "suspend" => (
            format!("Suspend {name}?"),
            format!(
                "{name} is logged out everywhere and cannot log in until unsuspended; their API tokens are revoked for good."
            ),
            format!("Suspend {name}"),
        ),
        "two-factor-off" => (
            format!("Turn off two-factor log-in of {name}?"),
            format!(
                "{name} can then log in with their password alone, until they turn it on again. They are emailed."
            ),
            "Turn it off".to_string(),
        ),
        _ => return None,
    })
}

/// `GET /admin/users/{name}/{action}`: the page that asks before a
/// destructive action.
#[utoipa::path(get, path = "/admin/users/{name}/{action}", operation_id = "admin_confirm_user_action", tag = "admin",
    params(("name" = String, Path, description = "The user name"),
           ("action" = inline(UserAction), Path, description = "What to do")),
    security(("token" = [])), responses(PageResponses))]
async fn confirm_user_action(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Page, WebError> {
    if account_with_emails(&app, &name).await?.is_none() {
        return Err(WebError::NotFound);
    }
    let Some((title, message, button)) = confirmation(&action, &name) else {
        return Err(WebError::NotFound);
    };
    Ok(section(
        "confirm",
        json!({
            "title": title, "message": message, "button": button,
            "action": format!("/admin/users/{}/{action}", path_segment(&name)),
            "cancel": format!("/admin/users/{}", path_segment(&name)),
        }),
    ))
}

fn refused(e: AccountError) -> WebError {
    match e {
        AccountError::Store(e) => WebError::from(e),
        // Refused: the reason, on a page of its own (409: not possible to
        // the account as it is), changing nothing.
        e => WebError::Conflict(e.sentence()),
    }
}

/// `POST /admin/users/{name}/{action}`: does it.
#[utoipa::path(post, path = "/admin/users/{name}/{action}", operation_id = "admin_user_action", tag = "admin",
    params(("name" = String, Path, description = "The user name"),
           ("action" = inline(UserAction), Path, description = "What to do")),
    security(("token" = [])),
    responses(
        (status = 200, description = "What was done (a browser is sent to the page that says so, 303)", body = ActionDone),
        (status = "default", description = "A problem: 404 for anyone but an administrator and for a user who does not exist; 409 for an action that does not apply to the account as it is (approving an active one, suspending oneself)",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn user_action(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    if account_with_emails(&app, &name).await?.is_none() {
        return Err(WebError::NotFound);
    }
    let me = session.user().unwrap_or_default();
    let done = match action.as_str() {
        "approve" => match acc.approve(&me, &name).await.map_err(refused)? {
            Approval::Active => Done::Approved,
            Approval::NeedsVerifying => Done::ApprovedUnverified,
        },
        "suspend" => {
            acc.suspend(&me, &name).await.map_err(refused)?;
            Done::Suspended
        }
        "unsuspend" => {
            acc.unsuspend(&me, &name).await.map_err(refused)?;
            Done::Unsuspended
        }
        "delete" => {
            acc.delete_account(&me, &name).await.map_err(refused)?;
            Done::Deleted
        }
        "reset" => {
            let emails = acc.email_addresses(&name).await.map_err(refused)?;
            match emails.first() {
                Some(e) => {
                    acc.request_reset(None, e).await.map_err(internal)?;
                    acc.audit(&me, "reset", &name, "").await.map_err(refused)?;
                    Done::ResetSent
                }
                None => Done::NoEmail,
            }
        }
        "two-factor-off" => {
            let cleared = acc.clear_second_factor(&name).await.map_err(refused)?;
            if cleared {
                acc.audit(&me, "two-factor-off", &name, "")
                    .await
                    .map_err(refused)?;
                Done::TwoFactorOff
            } else {
                Done::NoTwoFactor
            }
        }
        _ => return Err(WebError::NotFound),
    };
    let page = done.page(&name);
    Ok(Written::changed(
        ActionDone {
            username: name,
            done: done.key(),
        },
        page,
    )
    .into_response())
}

/// `GET /admin/signup`: how people join, and what new accounts get.
#[utoipa::path(get, path = "/admin/signup", operation_id = "admin_signup", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn signup_page(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let (notice, _) = notice_for(&app, &acc, &search, None).await?;
    let acc2 = acc.clone();
    let products = tokio::task::spawn_blocking(move || {
        ["open", "invitation", "approval", "created"]
            .iter()
            .map(|j| acc2.product(j).map(|p| (j.to_string(), p)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let mut ways = Vec::new();
    for (j, chosen) in products {
        let mut offerings = Vec::new();
        for o in app.offerings() {
            offerings.push(
                json!({ "name": o.name(), "included": chosen.iter().any(|x| x == o.name()) }),
            );
        }
        ways.push(json!({ "joined_by": j, "offerings": offerings }));
    }
    let mechanism = acc.signup_mechanism().await.map_err(internal)?;
    Ok(section(
        "signup",
        json!({
            "notice": notice,
            "mechanism": mechanism,
            "mechanisms": [
                ["open", "Open: anyone can sign up"],
                ["invitation", "By invitation only"],
                ["approval", "Anyone can ask; an administrator approves"],
                ["closed", "Closed: administrators create accounts"],
            ],
            "products": ways,
        }),
    ))
}

/// `GET /admin/offerings`: the offerings, on or off.
#[utoipa::path(get, path = "/admin/offerings", operation_id = "admin_offerings", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn offerings_page(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let (notice, undo) = notice_for(&app, &acc, &search, None).await?;
    let mut offerings = Vec::new();
    for o in app.offerings() {
        let name = o.name();
        let enabled = mantissa_web::offering_is_enabled(&app, name).await?;
        offerings.push(json!({ "name": name, "enabled": enabled, "core": o.core() }));
    }
    Ok(section(
        "offerings",
        json!({ "notice": notice, "undo": undo, "offerings": offerings }),
    ))
}

/// Delivered messages the mail section shows, the latest first.
const DELIVERED_SHOWN: u64 = 50;

/// A queued message as the mail section shows it.
fn queued_mail(m: &mantissa_store::Stored<QueuedMail>, now: Timestamp) -> Value {
    let state = m.mail_state();
    json!({
        "id": m.id().id(),
        "to": m.recipient_list().join(", "),
        "subject": m.subject,
        "state": state.as_str(),
        "state_words": match state {
            MailState::Queued if m.attempts == 0 => "Waiting",
            MailState::Queued => "Waiting to be tried again",
            MailState::Sending => "Being sent",
            MailState::Delivered => "Delivered",
            MailState::Failed => "Failed",
        },
        "attempts": m.attempts,
        "queued": when(m.queued_at, now),
        // For one being sent, the end of its runner's lease: not a try.
        "next_try": m.next_try.filter(|_| state == MailState::Queued).map(|t| when(t, now)),
        "last_try": m.last_try.map(|t| when(t, now)),
        "finished": m.finished_at.map(|t| when(t, now)),
        "last_error": m.last_error,
    })
}

/// The message for a mail action `done` to message `to` (an id), said of
/// the message as it is now, or none if `to` names no message in the queue
/// (see the module documentation).
async fn mail_notice(app: &App, search: &Search) -> Result<Option<String>, WebError> {
    let Some(done) = Done::from_key(&search.done) else {
        return Ok(None);
    };
    Ok(Some(match done {
        // Gone: nothing to name.
        Done::MailDropped => "Dropped the message; it will not be sent.".into(),
        Done::MailRetriedAll => "Every waiting and failed message will be tried again now.".into(),
        Done::MailRetried => {
            let Ok(id) = search.to.parse::<i64>() else {
                return Ok(None);
            };
            let Some(m) = mail_admin::message(app.site(), id)
                .await
                .map_err(internal)?
            else {
                return Ok(None);
            };
            let to = m.recipient_list().join(", ");
            match m.mail_state() {
                MailState::Delivered => {
                    format!("The message to {to} was tried again and delivered.")
                }
                MailState::Failed => format!(
                    "The message to {to} was tried again and failed: {}",
                    m.last_error.as_deref().unwrap_or("no reason given")
                ),
                MailState::Queued | MailState::Sending => {
                    format!("The message to {to} will be tried again now.")
                }
            }
        }
        _ => return Ok(None),
    }))
}

/// `GET /admin/mail`: where mail comes from, its templates, the outbound
/// queue (waiting, being sent, failed) and the delivery history.
#[utoipa::path(get, path = "/admin/mail", operation_id = "admin_mail", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn mail_page(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let (_, theme_dir) = crate::mail::site_and_theme(app.site()).await;
    let templates: Vec<Value> = crate::mail::MAIL_TEMPLATES
        .iter()
        .map(|(name, _)| {
            let themed = theme_dir.as_ref().is_some_and(|d| d.join(name).is_file());
            json!({ "name": name, "themed": themed })
        })
        .collect();
    let notice = mail_notice(&app, &search).await?;
    let now = Timestamp::now();
    let waiting = mail_admin::list(app.site(), false)
        .await
        .map_err(internal)?;
    let delivered = mail_admin::delivered(app.site(), DELIVERED_SHOWN)
        .await
        .map_err(internal)?;
    let retryable = waiting
        .iter()
        .filter(|m| matches!(m.mail_state(), MailState::Queued | MailState::Failed))
        .count();
    Ok(section(
        "mail",
        json!({
            "notice": notice,
            "from": acc.mail_from(),
            "base_url": acc.base_url(),
            "theme": theme_dir.as_ref().map(|d| d.display().to_string()),
            "templates": templates,
            "outbox": acc.mail_outbox().map(|d| d.display().to_string()),
            "waiting": waiting.iter().map(|m| queued_mail(m, now)).collect::<Vec<_>>(),
            "retryable": retryable,
            "delivered": delivered.iter().map(|m| queued_mail(m, now)).collect::<Vec<_>>(),
            "kept_days": mantissa_mail::KEEP_DELIVERED.as_secs() / 86400,
        }),
    ))
}

/// What an administrator can do to a queued message.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum MailAction {
    Retry,
    Drop,
}

/// What a mail action answers under `/api/`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct MailDone {
    /// The message, for one message; none for all.
    id: Option<i64>,
    /// What was done: `mail-retried`, `mail-retried-all` or
    /// `mail-dropped`.
    done: &'static str,
    /// How many messages it was done to.
    messages: usize,
}

/// A mail action's refusal: no such message is 404, one delivered already
/// (retrying would send it twice) is 409 with the reason.
fn mail_refused(e: mantissa_mail::MailError) -> WebError {
    match e {
        mantissa_mail::MailError::NoSuchMessage { .. } => WebError::NotFound,
        e @ mantissa_mail::MailError::AlreadyDelivered { .. } => WebError::Conflict(format!(
            "{}: retrying it would send it twice.",
            capitalised(&e.to_string())
        )),
        e => internal(e),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The queued message a URL names: anything but a number names none (a
/// 404, as for a number not in the queue, not a 400 about parsing).
fn message_id(id: &str) -> Result<i64, WebError> {
    id.parse().map_err(|_| WebError::NotFound)
}

/// `GET /admin/mail/{id}/drop`: the page that asks before a message is
/// dropped.
#[utoipa::path(get, path = "/admin/mail/{id}/{action}", operation_id = "admin_confirm_mail_action", tag = "admin",
    params(("id" = i64, Path, description = "The queued message"),
           ("action" = inline(MailAction), Path, description = "drop (retrying asks nothing)")),
    security(("token" = [])), responses(PageResponses))]
async fn confirm_mail_action(
    State(app): State<App>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Page, WebError> {
    let id = message_id(&id)?;
    if action != "drop" {
        return Err(WebError::NotFound);
    }
    let Some(m) = mail_admin::message(app.site(), id)
        .await
        .map_err(internal)?
    else {
        return Err(WebError::NotFound);
    };
    let to = m.recipient_list().join(", ");
    Ok(section(
        "confirm",
        json!({
            "title": format!("Drop the message to {to}?"),
            "message": format!(
                "“{}” to {to} is taken out of the queue and never sent{}. This cannot be undone.",
                m.subject,
                if m.mail_state() == MailState::Delivered { " again" } else { "" }
            ),
            "button": "Drop it",
            "action": format!("/admin/mail/{id}/drop"),
            "cancel": "/admin/mail",
        }),
    ))
}

/// `POST /admin/mail/{id}/{action}`: retries or drops one message.
#[utoipa::path(post, path = "/admin/mail/{id}/{action}", operation_id = "admin_mail_action", tag = "admin",
    params(("id" = i64, Path, description = "The queued message"),
           ("action" = inline(MailAction), Path, description = "What to do")),
    security(("token" = [])),
    responses(
        (status = 200, description = "What was done (a browser is sent to the mail section, 303)", body = MailDone),
        (status = "default", description = "A problem: 404 for anyone but an administrator and for a message not in the queue; 409 for retrying one delivered already",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn mail_action(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let id = message_id(&id)?;
    let done = match action.as_str() {
        "retry" => {
            mail_admin::retry(app.site(), id)
                .await
                .map_err(mail_refused)?;
            Done::MailRetried
        }
        "drop" => {
            mail_admin::drop_message(app.site(), id)
                .await
                .map_err(mail_refused)?;
            Done::MailDropped
        }
        _ => return Err(WebError::NotFound),
    };
    let me = session.user().unwrap_or_default();
    acc.audit(&me, &format!("mail-{action}"), &format!("message {id}"), "")
        .await
        .map_err(refused)?;
    let page = done.page(&id.to_string());
    Ok(Written::changed(
        MailDone {
            id: Some(id),
            done: done.key(),
            messages: 1,
        },
        page,
    )
    .into_response())
}

/// `POST /admin/mail/retry`: makes every waiting and failed message due
/// now.
#[utoipa::path(post, path = "/admin/mail/retry", operation_id = "admin_mail_retry_all", tag = "admin",
    security(("token" = [])),
    responses(
        (status = 200, description = "What was done (a browser is sent to the mail section, 303)", body = MailDone),
        (status = "default", description = "A problem: 404 for anyone but an administrator",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn mail_retry_all(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
) -> Result<Response, WebError> {
    let n = mail_admin::retry_all(app.site())
        .await
        .map_err(mail_refused)?;
    let me = session.user().unwrap_or_default();
    acc.audit(&me, "mail-retry-all", "", &format!("{n} message(s)"))
        .await
        .map_err(refused)?;
    let done = Done::MailRetriedAll;
    Ok(Written::changed(
        MailDone {
            id: None,
            done: done.key(),
            messages: n,
        },
        done.page(""),
    )
    .into_response())
}

/// `GET /admin/ports`: the addresses the site listens on.
#[utoipa::path(get, path = "/admin/ports", operation_id = "admin_ports", tag = "admin",
    security(("token" = [])), responses(PageResponses))]
async fn ports_page(State(app): State<App>) -> Result<Page, WebError> {
    let ports = app.site().store().read(|r| r.query::<Port>().all()).await?;
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "protocol": p.protocol, "address": p.address, "tls": p.cert.is_some() }))
        .collect();
    Ok(section("ports", json!({ "ports": ports })))
}

/// `GET /admin/logs`: the audit log.
#[utoipa::path(get, path = "/admin/logs", operation_id = "admin_logs", tag = "admin",
    params(Search), security(("token" = [])), responses(PageResponses))]
async fn logs_page(State(app): State<App>, Query(search): Query<Search>) -> Result<Page, WebError> {
    let page = Pager::page_from(&search.page);
    let now = Timestamp::now();
    let (entries, total) = app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            let total = r.query::<AuditEntry>().count()? as usize;
            let entries = r
                .query::<AuditEntry>()
                .order_by(AuditEntry::at.desc())
                .limit(ENTRIES_PER_PAGE as u64)
                .offset(Pager::skip(page, ENTRIES_PER_PAGE) as u64)
                .all()?;
            Ok((entries, total))
        })
        .await?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "at": when(e.at, now), "actor": e.actor, "action": e.action,
                "words": audit::describe(&e.action), "target": e.target, "detail": e.detail,
            })
        })
        .collect();
    Ok(section(
        "logs",
        json!({ "entries": entries, "pager": Pager::new(page, total, ENTRIES_PER_PAGE) }),
    ))
}

/// How people join.
#[derive(Deserialize, serde::Serialize, utoipa::ToSchema)]
struct Mechanism {
    /// `open`, `invitation`, `approval` or `closed`.
    #[schema(pattern = "^(open|invitation|approval|closed)$")]
    mechanism: String,
}

/// What the accounts that join one way get.
#[derive(Deserialize, utoipa::ToSchema)]
struct Product {
    /// The offerings (a form sends the field once for each ticked box).
    #[serde(default)]
    offering: Vec<String>,
}

/// What [`set_product`] answers under `/api/`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ProductSaved {
    /// How the accounts joined.
    joined_by: String,
    /// The offerings they get.
    offerings: Vec<String>,
}

/// What [`switch_offering`] answers under `/api/`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct OfferingSwitched {
    /// The offering.
    offering: String,
    /// Whether it is on now.
    on: bool,
}

/// `on` or `off`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Switch {
    On,
    Off,
}

/// What an administrator can do to an account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
enum UserAction {
    Approve,
    Suspend,
    Unsuspend,
    Delete,
    Reset,
    TwoFactorOff,
}

/// What [`user_action`] answers under `/api/`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ActionDone {
    /// The account.
    username: String,
    /// What was done: `approved`, `approved-unverified` (it still has to
    /// verify its address), `suspended`, `unsuspended`, `deleted`,
    /// `reset-sent`, `no-email` (no address to send a reset to),
    /// `two-factor-off` or `no-two-factor` (it had none).
    done: &'static str,
}

/// `POST /admin/signup`: how people join.
#[utoipa::path(post, path = "/admin/signup", operation_id = "admin_set_signup", tag = "admin",
    request_body(content(
        (Mechanism = "application/json"),
        (Mechanism = "application/x-www-form-urlencoded"),
    )),
    security(("token" = [])),
    responses(
        (status = 200, description = "How people join now (a browser is sent to the section, 303)", body = Mechanism),
        (status = "default", description = "A problem: 404 for anyone but an administrator; 400 for a way of joining that does not exist",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn set_signup(
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    JsonOrForm(m): JsonOrForm<Mechanism>,
) -> Result<Response, WebError> {
    let acc2 = acc.clone();
    let mech = m.mechanism.clone();
    tokio::task::spawn_blocking(move || acc2.set_signup_mechanism(&mech))
        .await
        .map_err(internal)?
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let me = session.user().unwrap_or_default();
    acc.audit(&me, "signup", &m.mechanism, "")
        .await
        .map_err(refused)?;
    Ok(Written::changed(&m, Done::Signup.page("")).into_response())
}

/// `GET /admin/offerings/{name}/off`: the page that asks first.
#[utoipa::path(get, path = "/admin/offerings/{name}/{switch}", operation_id = "admin_confirm_switch", tag = "admin",
    params(("name" = String, Path, description = "The offering"),
           ("switch" = inline(Switch), Path, description = "on or off")),
    security(("token" = [])), responses(PageResponses))]
async fn confirm_switch(
    State(app): State<App>,
    Path((name, switch)): Path<(String, String)>,
) -> Result<Page, WebError> {
    if app.offering(&name).is_none() || switch != "off" {
        return Err(WebError::NotFound);
    }
    Ok(section(
        "confirm",
        json!({
            "title": format!("Switch {name} off?"),
            "message": format!("Nobody can use {name} while it is off; what its users made stays in their stores, and switching it back on brings it back."),
            "button": format!("Switch {name} off"),
            "action": format!("/admin/offerings/{}/off", path_segment(&name)),
            "cancel": "/admin/offerings",
        }),
    ))
}

/// `POST /admin/offerings/{name}/{switch}`: switches it.
#[utoipa::path(post, path = "/admin/offerings/{name}/{switch}", operation_id = "admin_switch_offering", tag = "admin",
    params(("name" = String, Path, description = "The offering"),
           ("switch" = inline(Switch), Path, description = "on or off")),
    security(("token" = [])),
    responses(
        (status = 200, description = "The offering as it is now (a browser is sent to the offerings, 303)", body = OfferingSwitched),
        (status = "default", description = "A problem: 404 for anyone but an administrator and for an offering that does not exist; 409 for one that is part of the site itself",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn switch_offering(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path((name, switch)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let Some(offering) = app.offering(&name) else {
        return Err(WebError::NotFound);
    };
    if offering.core() {
        return Err(WebError::Conflict(format!(
            "{name} is part of the site itself (every log-in lands there) and cannot be switched off."
        )));
    }
    let on = match switch.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(WebError::NotFound),
    };
    let site = app.site().clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || mantissa_web::set_offering_enabled(&site, &n, on))
        .await
        .map_err(internal)??;
    let me = session.user().unwrap_or_default();
    let done = if on {
        Done::OfferingOn
    } else {
        Done::OfferingOff
    };
    acc.audit(&me, done.key(), &name, "")
        .await
        .map_err(refused)?;
    let page = done.page(&name);
    Ok(Written::changed(OfferingSwitched { offering: name, on }, page).into_response())
}

/// `POST /admin/products/{joined_by}`: what accounts that join so get.
#[utoipa::path(post, path = "/admin/products/{joined_by}", operation_id = "admin_set_product", tag = "admin",
    params(("joined_by" = String, Path, description = "How the accounts joined: open, invitation, approval or created")),
    request_body(content(
        (Product = "application/json"),
        (Product = "application/x-www-form-urlencoded"),
    )),
    security(("token" = [])),
    responses(
        (status = 200, description = "What they get now (a browser is sent to the section, 303)", body = ProductSaved),
        (status = "default", description = "A problem: 404 for anyone but an administrator and for a way of joining that does not exist; 422 for an offering that does not exist",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn set_product(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path(joined_by): Path<String>,
    JsonOrForm(product): JsonOrForm<Product>,
) -> Result<Response, WebError> {
    if !matches!(
        joined_by.as_str(),
        "open" | "invitation" | "approval" | "created"
    ) {
        return Err(WebError::NotFound);
    }
    let chosen = product.offering;
    if let Some(unknown) = chosen.iter().find(|o| app.offering(o).is_none()) {
        return Err(WebError::Unprocessable(format!(
            "This site has no offering called {unknown}."
        )));
    }
    let detail = chosen.join(", ");
    let (acc2, j, c) = (acc.clone(), joined_by.clone(), chosen.clone());
    tokio::task::spawn_blocking(move || acc2.set_product(&j, &c))
        .await
        .map_err(internal)?
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let me = session.user().unwrap_or_default();
    acc.audit(&me, "product", &joined_by, &detail)
        .await
        .map_err(refused)?;
    let page = Done::ProductSaved.page(&joined_by);
    let saved = ProductSaved {
        joined_by,
        offerings: chosen,
    };
    Ok(Written::changed(saved, page).into_response())
}

/// The "Add a user" form.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct NewUser {
    /// The new account's user name: lowercase letters, digits, `.`, `_`
    /// and `-`, starting with a letter or a digit.
    #[schema(required = true, pattern = "^[a-z0-9][a-z0-9._-]{1,63}$")]
    #[serde(default)]
    username: String,
    /// Where the welcome goes, with a link to set a password.
    #[schema(required = true, format = Email, max_length = 254)]
    #[serde(default)]
    email: String,
}

/// What creating a user answers under `/api/`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CreatedUser {
    /// The new account's user name.
    username: String,
    /// Whether its welcome (with the link to set a password) was sent.
    welcomed: bool,
}

/// `POST /admin/users`: creates an account, mailing its welcome; a mistake
/// shows the form again with the words beside the field.
#[utoipa::path(
    post,
    path = "/admin/users",
    operation_id = "admin_create_user",
    tag = "admin",
    request_body(content(
        (NewUser = "application/json"),
        (NewUser = "application/x-www-form-urlencoded"),
    )),
    security(("token" = [])),
    responses(
        (status = 201, description = "The account was created (a browser is sent to the users, 303)", body = CreatedUser),
        (status = "default", description = "A problem: 404 for anyone but an administrator; 409 for a name that is taken; 422 for a name or address that cannot be used",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ),
)]
async fn create_user(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    JsonOrForm(f): JsonOrForm<NewUser>,
) -> Result<Response, WebError> {
    let name = f.username.trim().to_string();
    let made = acc.create_user_welcomed(&name, f.email.trim()).await;
    let welcomed = match made {
        Ok(welcomed) => welcomed,
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::Taken(_)
            | AccountError::AddressTaken(_)
            | AccountError::TooLong { .. }),
        ) => {
            let field = match &e {
                AccountError::AddressTaken(_) => "email",
                _ if crate::service::normalize_email(&f.email).is_err() => "email",
                _ => "username",
            };
            let status = crate::pages::status_of(&e);
            let not_created = NotCreated {
                typed: f,
                field,
                message: e.sentence(),
                status,
            };
            let page = users_page(&app, &acc, &Search::default(), Some(not_created)).await?;
            return Ok(page.into_response());
        }
        Err(e) => return Err(internal(e)),
    };
    let me = session.user().unwrap_or_default();
    acc.audit(&me, "create", &name, "").await.map_err(refused)?;
    let done = if welcomed {
        Done::Created
    } else {
        Done::CreatedMailFailed
    };
    Ok(Written::created(
        CreatedUser {
            username: name.clone(),
            welcomed,
        },
        Some(format!("/api/admin/users/{}", path_segment(&name))),
        done.page(&name),
    )
    .into_response())
}

/// The console's routes, in the OpenAPI document under the `admin` tag.
pub fn routes(app: &App, accounts: Arc<Accounts>) -> OpenApiRouter<App> {
    accounts.activity.start(app.site(), app, &accounts);
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(users, create_user))
        .routes(routes!(user_page))
        .routes(routes!(confirm_user_action, user_action))
        .routes(routes!(signup_page, set_signup))
        .routes(routes!(set_product))
        .routes(routes!(offerings_page))
        .routes(routes!(confirm_switch, switch_offering))
        .routes(routes!(mail_page))
        .routes(routes!(mail_retry_all))
        .routes(routes!(confirm_mail_action, mail_action))
        .routes(routes!(ports_page))
        .routes(routes!(logs_page))
        .layer(from_fn_with_state(app.clone(), require_admin))
        .layer(Extension(accounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_with_the_exact_utc_time_beside() {
        let now = Timestamp::from_micros(1_700_000_000_000_000);
        let ago = |secs: i64| {
            when(
                Timestamp::from_micros(now.as_micros() - secs * 1_000_000),
                now,
            )
        };
        assert_eq!(ago(3 * 3600 + 5)["ago"], "3 hours ago");
        assert_eq!(ago(0)["utc"], "2023-11-14 22:13 UTC");
        assert_eq!(ago(0)["iso"], "2023-11-14T22:13:20Z");
    }
}
