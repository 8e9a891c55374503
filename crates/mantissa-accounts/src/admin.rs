//! The administrator's console at `/admin`: site statistics, the sign-up
//! mechanism, and users — search, approve, suspend, reset, delete. Anyone
//! who is not a signed-in administrator gets 404, as for anything they may
//! not see.
//!
//! An action ends on the console with a message saying what was done. The
//! redirect carries only a key from a fixed list ([`Done`]) and the name of
//! what it was done to, and the console shows a message only when that name
//! is one it knows (an account, an offering, a way of joining): never text
//! from the URL, which anyone can write into a link to the console. A
//! refused action answers with its reason on an error page instead.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mantissa_store::StoreError;
use mantissa_web::{App, Page, Pager, Session, WebError};
use serde::Deserialize;
use serde_json::json;

use crate::manage::{Approval, approve_account, suspend_account, unsuspend_account};
use crate::model::{Account, EmailAddress, status};
use crate::service::{AccountError, Accounts};

async fn require_admin(State(app): State<App>, req: Request, next: Next) -> Response {
    let user = req.extensions().get::<Session>().and_then(Session::user);
    let Some(name) = user else {
        return WebError::NotFound.into_response();
    };
    let is_admin = app
        .site()
        .store()
        .read(move |r| {
            Ok(r.query::<Account>()
                .filter(Account::username.eq(name))
                .first()?
                .is_some_and(|a| a.admin && a.status == status::ACTIVE))
        })
        .await;
    match is_admin {
        Ok(true) => next.run(req).await,
        Ok(false) => WebError::NotFound.into_response(),
        Err(e) => WebError::from(e).into_response(),
    }
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
    /// A [`Done`] key.
    #[serde(default)]
    done: String,
    /// The account, offering or way of joining it was done to.
    #[serde(default)]
    to: String,
    /// The page of the user list, from 1; anything else is the first.
    #[serde(default)]
    page: String,
}

/// What an action did: the key the redirect to the console carries.
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
}

impl Done {
    const ALL: [Done; 15] = [
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
        }
    }

    fn from_key(key: &str) -> Option<Done> {
        Done::ALL.into_iter().find(|d| d.key() == key)
    }
}

/// What the console knows names in a [`Done`] message against.
struct Known<'a> {
    /// Account names and their addresses.
    users: &'a [serde_json::Value],
    offerings: &'a [String],
    mechanism: &'a str,
}

/// The message for `done` to `to`, if `to` is something the console knows
/// (see the module documentation).
fn done_message(done: Done, to: &str, known: &Known<'_>) -> Option<String> {
    let user = || known.users.iter().find(|u| u["username"] == to);
    let ways = ["open", "invitation", "approval", "created"];
    Some(match done {
        // The mechanism now in force, not the one in the URL.
        Done::Signup => format!("Sign-up is now {}.", known.mechanism),
        Done::Approved => format!("Approved {}.", user()?["username"].as_str()?),
        Done::ApprovedUnverified => format!(
            "Approved {}; the account works once its email address is verified.",
            user()?["username"].as_str()?
        ),
        Done::Suspended => format!(
            "Suspended {}; their API tokens are revoked.",
            user()?["username"].as_str()?
        ),
        Done::TwoFactorOff => format!(
            "Two-factor log-in of {} is off; they were mailed.",
            user()?["username"].as_str()?
        ),
        Done::NoTwoFactor => format!(
            "{} had no two-factor log-in on.",
            user()?["username"].as_str()?
        ),
        Done::Unsuspended => format!("{} can log in again.", user()?["username"].as_str()?),
        Done::ResetSent => format!(
            "A reset link was emailed to {}.",
            user()?["username"].as_str()?
        ),
        Done::NoEmail => format!(
            "{} has no email address to send a reset link to.",
            user()?["username"].as_str()?
        ),
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
            let u = user()?;
            match u["emails"].get(0).and_then(|e| e.as_str()) {
                Some(email) => format!(
                    "Created {}; a link to set a password was emailed to {email}.",
                    u["username"].as_str()?
                ),
                None => format!("Created {}.", u["username"].as_str()?),
            }
        }
        Done::CreatedMailFailed => format!(
            "Created {}, but the email with the link to set a password could not be sent.",
            user()?["username"].as_str()?
        ),
    })
}

/// Users on one page of the console's list (and of its JSON at
/// `/api/admin`): a site with a hundred thousand accounts must not build
/// them all into one answer.
const USERS_PER_PAGE: usize = 50;

async fn dashboard(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let q = search.q.trim().to_lowercase();
    let me = session.user().unwrap_or_default();
    let page = Pager::page_from(&search.page);
    // The message's account is looked for among all, not only those the
    // search shows.
    let done = Done::from_key(&search.done);
    let about = match done {
        Some(_) if !search.to.is_empty() => {
            let to = search.to.clone();
            app.site()
                .store()
                .read(move |r| {
                    let Some(a) = r
                        .query::<Account>()
                        .filter(Account::username.eq(to))
                        .first()?
                    else {
                        return Ok(vec![]);
                    };
                    let emails = r
                        .query::<EmailAddress>()
                        .filter(EmailAddress::account.eq(a.id()))
                        .column(EmailAddress::address)?;
                    Ok(vec![json!({ "username": a.username, "emails": emails })])
                })
                .await?
        }
        _ => vec![],
    };
    let (users, matched, total, pending) = app
        .site()
        .store()
        .read(move |r| {
            let total = r.query::<Account>().count()?;
            let pending = r
                .query::<Account>()
                .filter(Account::status.eq(status::PENDING))
                .count()?;
            let by_name = r.query::<Account>().order_by(Account::username.asc());
            let emails_of = |a: &mantissa_store::Stored<Account>| {
                r.query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(a.id()))
                    .column(EmailAddress::address)
            };
            let skip = Pager::skip(page, USERS_PER_PAGE);
            let (accounts, matched) = if q.is_empty() {
                let accounts = by_name
                    .limit(USERS_PER_PAGE as u64)
                    .offset(skip as u64)
                    .all()?
                    .into_iter()
                    .map(|a| emails_of(&a).map(|e| (a, e)))
                    .collect::<Result<Vec<_>, _>>()?;
                (accounts, total as usize)
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
                for a in by_name.all()? {
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
            let mut out = Vec::new();
            for (a, emails) in accounts {
                // No buttons that would lock the administrator out.
                let mut actions = vec![];
                let myself = a.username == me;
                match a.status.as_str() {
                    status::PENDING => actions.push("approve"),
                    status::SUSPENDED => actions.push("unsuspend"),
                    _ if !myself => actions.push("suspend"),
                    _ => {}
                }
                actions.push("reset");
                if a.totp_enabled {
                    // For someone who lost their authenticator; the owner
                    // is mailed.
                    actions.push("two-factor-off");
                }
                if !myself {
                    actions.push("delete");
                }
                out.push(json!({
                    "username": a.username, "admin": a.admin, "status": a.status,
                    "locked": a.locked, "emails": emails, "actions": actions,
                }));
            }
            Ok((out, matched, total, pending))
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
    .map_err(|e| WebError::Internal(e.to_string()))?;
    let acc2 = acc.clone();
    let products = tokio::task::spawn_blocking(move || {
        ["open", "invitation", "approval", "created"]
            .iter()
            .map(|j| acc2.product(j).map(|p| (j.to_string(), p)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
    .map_err(|e| WebError::Internal(e.to_string()))?;
    let mut offerings = Vec::new();
    for o in app.offerings() {
        let name = o.name();
        let enabled = mantissa_web::offering_is_enabled(&app, name).await?;
        let in_products: Vec<_> = products
            .iter()
            .map(|(j, p)| json!({ "joined_by": j, "included": p.iter().any(|x| x == name) }))
            .collect();
        offerings.push(json!({
            "name": name, "enabled": enabled, "core": o.core(), "products": in_products,
        }));
    }
    let mechanism = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let offering_names: Vec<String> = app
        .offerings()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let notice = done.and_then(|d| {
        done_message(
            d,
            &search.to,
            &Known {
                users: &about,
                offerings: &offering_names,
                mechanism: &mechanism,
            },
        )
    });
    Ok(Page::new(
        "accounts/admin.html",
        json!({
            "q": search.q,
            "notice": notice,
            "mechanism": mechanism,
            "users": users,
            "pager": Pager::new(page, matched, USERS_PER_PAGE),
            "offerings": offerings,
            "stats": {
                "users": total, "stores": stores, "disk_bytes": disk,
                "requests_last_minute": app.requests_last_minute(), "pending": pending,
            },
        }),
    ))
}

#[derive(Deserialize)]
struct Mechanism {
    mechanism: String,
}

/// Back to the console, which says what was `done` to `to`.
fn back(done: Done, to: &str) -> Response {
    let query =
        serde_urlencoded::to_string([("done", done.key()), ("to", to)]).expect("strings encode");
    Redirect::to(&format!("/admin?{query}")).into_response()
}

async fn set_signup(
    Extension(acc): Extension<Arc<Accounts>>,
    Form(m): Form<Mechanism>,
) -> Result<Response, WebError> {
    let acc2 = acc.clone();
    let mech = m.mechanism.clone();
    tokio::task::spawn_blocking(move || acc2.set_signup_mechanism(&mech))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(back(Done::Signup, ""))
}

async fn user_action(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let me = session.user().unwrap_or_default();
    let store = app.site().store().clone();
    let n = name.clone();
    let act = action.clone();
    let outcome = store
        .write(move |tx| {
            let mut a = tx
                .query::<Account>()
                .filter(Account::username.eq(n.clone()))
                .first()?
                .ok_or_else(|| StoreError::app("no such user"))?;
            match act.as_str() {
                // The same transactions as `mantissa user approve`,
                // `suspend` and `unsuspend` (crate::manage).
                "approve" if a.status == status::PENDING => {
                    Ok(match approve_account(tx, &mut a)? {
                        Approval::Active => Done::Approved,
                        Approval::AwaitingVerification => Done::ApprovedUnverified,
                    })
                }
                "suspend" if n != me => {
                    suspend_account(tx, &mut a)?;
                    Ok(Done::Suspended)
                }
                "suspend" => Err(StoreError::app("you cannot suspend yourself")),
                "unsuspend" if a.status == status::SUSPENDED => {
                    unsuspend_account(tx, &mut a)?;
                    Ok(Done::Unsuspended)
                }
                "reset" => Ok(Done::ResetSent),
                "two-factor-off" => Ok(Done::TwoFactorOff),
                "delete" if n != me => Ok(Done::Deleted),
                "delete" => Err(StoreError::app("you cannot delete yourself")),
                _ => Err(StoreError::app(format!("{act} does not apply to {n}"))),
            }
        })
        .await;
    match outcome {
        Ok(Done::ResetSent) => {
            let emails = {
                let n = name.clone();
                app.site()
                    .store()
                    .read(move |r| {
                        let Some(a) = r
                            .query::<Account>()
                            .filter(Account::username.eq(n))
                            .first()?
                        else {
                            return Ok(vec![]);
                        };
                        r.query::<EmailAddress>()
                            .filter(EmailAddress::account.eq(a.id()))
                            .column(EmailAddress::address)
                    })
                    .await?
            };
            match emails.first() {
                Some(e) => {
                    acc.request_reset(None, e)
                        .await
                        .map_err(|e| WebError::Internal(e.to_string()))?;
                    Ok(back(Done::ResetSent, &name))
                }
                None => Ok(back(Done::NoEmail, &name)),
            }
        }
        Ok(Done::TwoFactorOff) => {
            let cleared = acc.clear_second_factor(&name).await.map_err(|e| match e {
                AccountError::Store(e) => WebError::from(e),
                e => WebError::BadRequest(e.to_string()),
            })?;
            let done = if cleared {
                Done::TwoFactorOff
            } else {
                Done::NoTwoFactor
            };
            Ok(back(done, &name))
        }
        Ok(Done::Deleted) => {
            let n = name.clone();
            tokio::task::spawn_blocking(move || acc.delete_user(&n))
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?
                .map_err(|e| WebError::Internal(e.to_string()))?;
            Ok(back(Done::Deleted, ""))
        }
        Ok(done) => Ok(back(done, &name)),
        // Refused: the reason, on a page of its own (400), changing nothing.
        Err(StoreError::App(m)) => Err(WebError::BadRequest(format!("{m}."))),
        Err(e) => Err(WebError::from(e)),
    }
}

async fn switch_offering(
    State(app): State<App>,
    Path((name, switch)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let Some(offering) = app.offering(&name) else {
        return Err(WebError::NotFound);
    };
    if offering.core() {
        return Err(WebError::BadRequest(format!(
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
        .map_err(|e| WebError::Internal(e.to_string()))??;
    Ok(back(
        if on {
            Done::OfferingOn
        } else {
            Done::OfferingOff
        },
        &name,
    ))
}

async fn set_product(
    Extension(acc): Extension<Arc<Accounts>>,
    Path(joined_by): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let chosen: Vec<String> = fields
        .into_iter()
        .filter(|(k, _)| k == "offering")
        .map(|(_, v)| v)
        .collect();
    let j = joined_by.clone();
    tokio::task::spawn_blocking(move || acc.set_product(&j, &chosen))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(back(Done::ProductSaved, &joined_by))
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    email: String,
}

async fn create_user(
    Extension(acc): Extension<Arc<Accounts>>,
    Form(f): Form<NewUser>,
) -> Result<Response, WebError> {
    let acc2 = acc.clone();
    let (name, email) = (f.username.trim().to_string(), f.email.trim().to_string());
    let (n, e) = (name.clone(), email.clone());
    let made = tokio::task::spawn_blocking(move || acc2.create_user(&n, Some(&e), None, false))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    match made {
        Ok(_) => match acc.request_reset(None, &email).await {
            Ok(()) => Ok(back(Done::Created, &name)),
            Err(e) => {
                tracing::error!(user = %name, error = %e, "the new account's link could not be sent");
                Ok(back(Done::CreatedMailFailed, &name))
            }
        },
        Err(
            e @ (crate::AccountError::Invalid(_) | crate::AccountError::Store(StoreError::App(_))),
        ) => Err(WebError::BadRequest(e.to_string())),
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}

/// The console's routes.
pub fn routes(app: &App, accounts: Arc<Accounts>) -> Router<App> {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/signup", post(set_signup))
        .route("/admin/users", post(create_user))
        .route("/admin/offerings/{name}/{switch}", post(switch_offering))
        .route("/admin/products/{joined_by}", post(set_product))
        .route("/admin/users/{name}/{action}", post(user_action))
        .layer(Extension(accounts))
        .layer(from_fn_with_state(app.clone(), require_admin))
}
