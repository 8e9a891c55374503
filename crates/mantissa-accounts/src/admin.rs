//! The administrator's console at `/admin`: site statistics, the sign-up
//! mechanism, and users — search, approve, suspend, reset, delete. Anyone
//! who is not a signed-in administrator gets 404, as for anything they may
//! not see.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mantissa_store::StoreError;
use mantissa_web::{App, Page, Session, SessionRecord, WebError};
use serde::Deserialize;
use serde_json::json;

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
    #[serde(default)]
    notice: String,
    /// The page of the user list, from 1; anything else is the first.
    #[serde(default)]
    page: String,
}

/// Users on one page of the console's list (and of its JSON at
/// `/api/admin`): a site with a hundred thousand accounts must not build
/// them all into one answer.
const USERS_PER_PAGE: usize = 50;

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn dashboard(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    Query(search): Query<Search>,
) -> Result<Page, WebError> {
    let q = search.q.trim().to_lowercase();
    let me = session.user().unwrap_or_default();
    let page = search.page.parse::<usize>().unwrap_or(1).max(1);
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
            let skip = (page - 1) * USERS_PER_PAGE;
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
                let mut matched = 0;
                let mut accounts = Vec::new();
                for a in by_name.all()? {
                    let emails = emails_of(&a)?;
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
    let pages = matched.div_ceil(USERS_PER_PAGE).max(1);
    let site = app.site().clone();
    let (stores, disk) = tokio::task::spawn_blocking(move || {
        (
            site.user_names().map(|n| n.len()).unwrap_or(0),
            dir_size(site.root()),
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
        offerings.push(json!({ "name": name, "enabled": enabled, "products": in_products }));
    }
    let mechanism = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(Page::new(
        "accounts/admin.html",
        json!({
            "q": search.q,
            "notice": (!search.notice.is_empty()).then_some(search.notice),
            "mechanism": mechanism,
            "users": users,
            "pager": {
                "page": page, "pages": pages, "matched": matched,
                "previous": (page > 1).then(|| page - 1),
                "next": (page < pages).then(|| page + 1),
            },
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

fn back(notice: &str) -> Response {
    let encoded: String = notice
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Redirect::to(&format!("/admin?notice={encoded}")).into_response()
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
    Ok(back(&format!("Sign-up is now {}.", m.mechanism)))
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
                "approve" if a.status == status::PENDING => {
                    let verified = tx
                        .query::<EmailAddress>()
                        .filter(EmailAddress::account.eq(a.id()))
                        .filter(EmailAddress::verified.eq(true))
                        .count()?
                        > 0;
                    a.status = if verified {
                        status::ACTIVE
                    } else {
                        status::UNVERIFIED
                    }
                    .into();
                    tx.update(&a)?;
                    Ok(if verified {
                        format!("Approved {n}.")
                    } else {
                        format!(
                            "Approved {n}; the account works once its email address is verified."
                        )
                    })
                }
                "suspend" if n != me => {
                    a.status = status::SUSPENDED.into();
                    tx.update(&a)?;
                    tx.delete_where(SessionRecord::user.eq(n.clone()))?;
                    // For good: unsuspending does not bring them back.
                    crate::tokens::revoke_all(tx, a.id())?;
                    Ok(format!("Suspended {n}; their API tokens are revoked."))
                }
                "suspend" => Err(StoreError::app("you cannot suspend yourself")),
                "unsuspend" if a.status == status::SUSPENDED => {
                    a.status = status::ACTIVE.into();
                    tx.update(&a)?;
                    Ok(format!("{n} can log in again."))
                }
                "reset" => Ok("reset".into()),
                "two-factor-off" => Ok("two-factor-off".into()),
                "delete" if n != me => Ok("delete".into()),
                "delete" => Err(StoreError::app("you cannot delete yourself")),
                _ => Err(StoreError::app(format!("{act} does not apply to {n}"))),
            }
        })
        .await;
    match outcome {
        Ok(m) if m == "reset" => {
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
                    Ok(back(&format!("A reset link was emailed to {name}.")))
                }
                None => Ok(back(&format!(
                    "{name} has no email address to send a reset link to."
                ))),
            }
        }
        Ok(m) if m == "two-factor-off" => {
            let cleared = acc.clear_second_factor(&name).await.map_err(|e| match e {
                AccountError::Store(e) => WebError::from(e),
                e => WebError::BadRequest(e.to_string()),
            })?;
            Ok(back(&if cleared {
                format!("Two-factor log-in of {name} is off; they were mailed.")
            } else {
                format!("{name} had no two-factor log-in on.")
            }))
        }
        Ok(m) if m == "delete" => {
            let n = name.clone();
            let export = tokio::task::spawn_blocking(move || acc.delete_user(&n))
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?
                .map_err(|e| WebError::Internal(e.to_string()))?;
            Ok(back(&format!(
                "Deleted {name}; the store was exported first to {}.",
                export.display()
            )))
        }
        Ok(m) => Ok(back(&m)),
        Err(StoreError::App(m)) => Ok(back(&m)),
        Err(e) => Err(WebError::from(e)),
    }
}

async fn switch_offering(
    State(app): State<App>,
    Path((name, switch)): Path<(String, String)>,
) -> Result<Response, WebError> {
    if app.offering(&name).is_none() {
        return Err(WebError::NotFound);
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
    Ok(back(&format!(
        "{name} is now {}.",
        if on { "on" } else { "off" }
    )))
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
    Ok(back(&format!(
        "Saved the product for accounts that join by {joined_by}."
    )))
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
            Ok(()) => Ok(back(&format!(
                "Created {name}; a link to set a password was emailed to {email}."
            ))),
            Err(e) => Ok(back(&format!(
                "Created {name}, but the email could not be sent: {e}"
            ))),
        },
        Err(
            e @ (crate::AccountError::Invalid(_) | crate::AccountError::Store(StoreError::App(_))),
        ) => Ok(back(&e.to_string())),
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
