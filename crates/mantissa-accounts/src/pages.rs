//! The account pages: `/login`, `/logout`, `/signup`, `/verify/…`,
//! `/reset`, `/reset/…`, `/unlock/…`, `/email/…`, and the signed-in user's
//! `/private/settings`.
//!
//! A mailed link only ever shows a page: what it does happens when its
//! button is pressed (a POST). Mail scanners and link prefetchers follow
//! links with GET, and would otherwise verify an address, unlock an account
//! or move it to a new address without the person ever seeing it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mantissa_web::{
    ApiRequest, App, ClientInfo, Offering, Page, SESSION_LIFETIME, Session, WebError,
};
use serde::Deserialize;
use serde_json::json;

use crate::service::{AccountError, Accounts};
use crate::settings::{revoke_token, revoke_token_form, totp_begin, totp_cancel};

/// How long "remember me" keeps a session.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

fn ip(req_ip: Option<Extension<ClientInfo>>) -> Option<IpAddr> {
    req_ip.map(|Extension(c)| c.peer.ip())
}

/// Where a log-in lands when `next` says nowhere (or nowhere safe) and
/// the user has no application ([`crate::nav::landing`]).
pub(crate) const HOME: &str = "/private/settings";

/// A path of this site to go to after logging in, if `next` is one;
/// anything else goes to the user's first application
/// ([`crate::nav::landing`]).
///
/// `next` is resolved as a browser resolves a `Location` against the
/// site's origin (the WHATWG URL parser: it drops TAB, CR and LF, reads
/// `\` as `/`, so `/\t/evil.example` is `//evil.example`, another host),
/// and must stay on that origin. Control characters are refused before
/// that (no browser needs them, and they hid the attack). What is answered
/// is the resolved path, query and fragment, serialised by the parser
/// (non-ASCII percent-encoded), so it is always a valid header value and a
/// strange `next` never turns a log-in into a 500; a path that would
/// begin with `//` (which a browser reads as another host) is refused.
pub(crate) fn safe_next(next: &str) -> Option<String> {
    // Any origin stands for the site's: only "the same one" matters, and
    // the answer carries no origin.
    const SITE: &str = "http://site.invalid/";
    if next.is_empty() || next.chars().any(char::is_control) || next.trim() != next {
        return None;
    }
    let Ok(base) = url::Url::parse(SITE) else {
        return None;
    };
    match base.join(next) {
        Ok(to) if to.origin() == base.origin() && !to.path().starts_with("//") => {
            let mut local = to.path().to_string();
            if let Some(q) = to.query() {
                local.push('?');
                local.push_str(q);
            }
            if let Some(f) = to.fragment() {
                local.push('#');
                local.push_str(f);
            }
            Some(local)
        }
        _ => None,
    }
}

/// The status that answers an account error the person can act on.
pub(crate) fn status_of(e: &AccountError) -> StatusCode {
    match e {
        AccountError::Throttled | AccountError::Wait { .. } => StatusCode::TOO_MANY_REQUESTS,
        AccountError::TooLong { .. } => StatusCode::BAD_REQUEST,
        AccountError::BadCredentials | AccountError::NotActive(_) | AccountError::CodeNeeded => {
            StatusCode::UNAUTHORIZED
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// A field's value to show again in its form: not when it was too long to
/// be anything (a 2 MB "name" is not sent back).
pub(crate) fn shown_again(value: &str) -> &str {
    if value.len() > crate::service::MAX_WHO_LEN {
        ""
    } else {
        value
    }
}

/// What a request that came with an API token is told when it tries what
/// only the person may do.
pub(crate) const PERSON_ONLY: &str = "the password, the email address and two-factor log-in are changed by the person, signed in: an API token cannot change them";

fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> Page {
    Page::new(
        "accounts/message.html",
        json!({ "title": title, "message": text, "link": link.map(|l| l.0), "link_text": link.map(|l| l.1) }),
    )
}

/// A form's success: a redirect to `to` whose page says `key`'s message
/// (POST-redirect-GET, [`mantissa_web::done`]); under `/api/`, the message
/// (`title`, `text`) as data, as before.
fn succeeded(api: bool, to: &str, key: &str, title: &str, text: &str) -> Response {
    if api {
        message(title, text, None).into_response()
    } else {
        mantissa_web::done(to, key).into_response()
    }
}

fn failed(e: AccountError) -> Result<Page, WebError> {
    match e {
        AccountError::Store(e) => Err(WebError::from(e)),
        other => Err(WebError::Internal(other.to_string())),
    }
}

/// The answer to a mailed link that did not work: its reason, with a 404;
/// a failing store is not a bad link, and goes to [`failed`] (a logged 500,
/// its details not shown).
fn link_refused(e: AccountError, retry: Option<(&str, &str)>) -> Result<Page, WebError> {
    if matches!(e, AccountError::Store(_)) {
        return failed(e);
    }
    let mut p = message("Link not valid", &e.to_string(), retry);
    p.status = StatusCode::NOT_FOUND;
    Ok(p)
}

#[derive(Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

async fn login_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Query(q): Query<NextQuery>,
) -> Result<Page, WebError> {
    let open = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        != "closed";
    Ok(Page::new(
        "accounts/login.html",
        json!({ "next": q.next, "who": "", "error": null, "signup_open": open,
                "passkeys": acc.passkeys_available().is_ok() }),
    ))
}

/// A platform form's fields all have defaults: one sent without a field
/// is refused on the form, saying why, not with axum's bare "missing
/// field" text.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    who: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    remember: Option<String>,
    #[serde(default)]
    next: String,
}

async fn login(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    client: Option<Extension<ClientInfo>>,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    match acc
        .login_with_code(ip(client), &f.who, &f.password, f.code.as_deref())
        .await
    {
        Ok(user) => {
            let lifetime = if f.remember.is_some() {
                REMEMBER_FOR
            } else {
                SESSION_LIFETIME
            };
            session.begin(&app, Some(user.clone()), lifetime).await?;
            let to = match safe_next(&f.next) {
                Some(next) => next,
                None => crate::nav::landing(&app, &user).await,
            };
            Ok(Redirect::to(&to).into_response())
        }
        Err(
            e @ (AccountError::BadCredentials
            | AccountError::NotActive(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }
            | AccountError::CodeNeeded),
        ) => {
            let open = acc
                .signup_mechanism()
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?
                != "closed";
            let status = status_of(&e);
            let mut page = Page::new(
                "accounts/login.html",
                json!({ "next": safe_next(&f.next).unwrap_or_default(), "who": shown_again(&f.who), "error": e.to_string(), "signup_open": open,
                        "passkeys": acc.passkeys_available().is_ok() }),
            );
            page.status = status;
            Ok(page.into_response())
        }
        Err(e) => failed(e).map(IntoResponse::into_response),
    }
}

async fn logout(
    State(app): State<App>,
    Extension(session): Extension<Session>,
) -> Result<Response, WebError> {
    session.end(&app).await?;
    Ok(mantissa_web::done("/", "logged-out").into_response())
}

#[derive(Deserialize, Default)]
struct SignupQuery {
    #[serde(default)]
    invitation: String,
}

async fn signup_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Query(q): Query<SignupQuery>,
) -> Result<Page, WebError> {
    let mechanism = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    if mechanism == "closed" || (mechanism == "invitation" && q.invitation.is_empty()) {
        let mut p = message(
            "Sign-up is closed",
            "New accounts on this site are made by its administrators.",
            None,
        );
        p.status = StatusCode::FORBIDDEN;
        return Ok(p);
    }
    Ok(Page::new(
        "accounts/signup.html",
        json!({ "invitation": q.invitation, "username": "", "email": "", "error": null }),
    ))
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    invitation: String,
}

async fn signup(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    api: Option<Extension<ApiRequest>>,
    Form(f): Form<SignupForm>,
) -> Result<Response, WebError> {
    let invitation = (!f.invitation.is_empty()).then_some(f.invitation.as_str());
    match acc
        .signup(ip(client), &f.username, &f.email, &f.password, invitation)
        .await
    {
        Ok(()) => Ok(succeeded(
            api.is_some(),
            "/login",
            "signup-sent",
            "Check your email",
            &format!(
                "We sent a link to {}. Follow it to activate your account.",
                f.email.trim()
            ),
        )),
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::SignupClosed(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => {
            let mut p = Page::new(
                "accounts/signup.html",
                json!({ "invitation": shown_again(&f.invitation), "username": shown_again(&f.username),
                        "email": shown_again(&f.email), "error": e.to_string() }),
            );
            p.status = status_of(&e);
            Ok(p.into_response())
        }
        Err(e) => failed(e).map(IntoResponse::into_response),
    }
}

/// The page a mailed link shows: what pressing its button will do.
fn confirm(title: &str, text: &str, button: &str) -> Page {
    Page::new(
        "accounts/confirm.html",
        json!({ "title": title, "message": text, "button": button }),
    )
}

async fn verify_form() -> Page {
    confirm(
        "Verify your email address",
        "Press the button to confirm that this address is yours and finish signing up.",
        "Verify my address",
    )
}

async fn unlock_form() -> Page {
    confirm(
        "Unlock your account",
        "Your account was locked after too many failed log-ins. Press the button to unlock it.",
        "Unlock my account",
    )
}

async fn confirm_email_form() -> Page {
    confirm(
        "Change your email address",
        "Press the button to move your account to this new address.",
        "Use this address",
    )
}

async fn verify(
    Extension(acc): Extension<Arc<Accounts>>,
    api: Option<Extension<ApiRequest>>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    match acc.verify(&token).await {
        Ok(user) => {
            // Verified, and perhaps waiting for an administrator: told so.
            let waiting = acc
                .account_status(&user)
                .await
                .is_ok_and(|s| s.as_deref() == Some(crate::model::status::PENDING));
            Ok(if waiting {
                succeeded(
                    api.is_some(),
                    "/login",
                    "verified-waiting",
                    "Email verified",
                    "An administrator will approve your account; you can log in once they have.",
                )
            } else {
                succeeded(
                    api.is_some(),
                    "/login",
                    "email-verified",
                    "Email verified",
                    "Your account is ready.",
                )
            })
        }
        Err(e) => link_refused(e, None).map(IntoResponse::into_response),
    }
}

async fn unlock(
    Extension(acc): Extension<Arc<Accounts>>,
    api: Option<Extension<ApiRequest>>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    match acc.unlock(&token).await {
        Ok(_) => Ok(succeeded(
            api.is_some(),
            "/login",
            "unlocked",
            "Account unlocked",
            "You can log in again.",
        )),
        Err(e) => link_refused(e, None).map(IntoResponse::into_response),
    }
}

async fn reset_form() -> Page {
    Page::new("accounts/reset.html", json!({}))
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    email: String,
}

async fn reset(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    api: Option<Extension<ApiRequest>>,
    Form(f): Form<ResetForm>,
) -> Result<Response, WebError> {
    match acc.request_reset(ip(client), &f.email).await {
        Ok(()) => Ok(succeeded(
            api.is_some(),
            "/login",
            "reset-sent",
            "Check your email",
            "If an account has this address, we sent it a link to choose a new password.",
        )),
        Err(e @ (AccountError::Throttled | AccountError::Wait { .. })) => {
            let mut p = message("Too many attempts", &e.to_string(), None);
            p.status = StatusCode::TOO_MANY_REQUESTS;
            Ok(p.into_response())
        }
        Err(e @ AccountError::TooLong { .. }) => {
            let mut p = message(
                "Not an email address",
                &e.to_string(),
                Some(("/reset", "Try again")),
            );
            p.status = StatusCode::BAD_REQUEST;
            Ok(p.into_response())
        }
        Err(e) => failed(e).map(IntoResponse::into_response),
    }
}

async fn new_password_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    if !acc
        .password_link_valid(&token)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
    {
        return link_refused(AccountError::BadLink, Some(("/reset", "Get a new link")));
    }
    Ok(Page::new(
        "accounts/new_password.html",
        json!({ "error": null }),
    ))
}

#[derive(Deserialize)]
struct NewPasswordForm {
    #[serde(default)]
    password: String,
}

async fn new_password(
    Extension(acc): Extension<Arc<Accounts>>,
    api: Option<Extension<ApiRequest>>,
    Path(token): Path<String>,
    Form(f): Form<NewPasswordForm>,
) -> Result<Response, WebError> {
    match acc.reset(&token, &f.password).await {
        Ok(_) => Ok(succeeded(
            api.is_some(),
            "/login",
            "password-set",
            "Password changed",
            "Your new password is set, and every session of your account has ended.",
        )),
        Err(AccountError::Invalid(m)) => {
            let mut p = Page::new("accounts/new_password.html", json!({ "error": m }));
            p.status = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(p.into_response())
        }
        Err(e) => {
            link_refused(e, Some(("/reset", "Get a new link"))).map(IntoResponse::into_response)
        }
    }
}

/// The account routes outside `/private/`, and the admin console.
///
/// The accounts also decide the navigation of every page from here on
/// (the user's applications, Admin, Sign up) and the front page's
/// first-run steps ([`App::set_navigation`]).
pub fn routes(app: &App, accounts: Arc<Accounts>) -> Router<App> {
    app.set_navigation(Arc::new(crate::nav::AccountsNavigation(accounts.clone())));
    Router::new()
        .merge(crate::admin::routes(app, accounts.clone()))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/signup", get(signup_form).post(signup))
        .route("/verify/{token}", get(verify_form).post(verify))
        .route("/unlock/{token}", get(unlock_form).post(unlock))
        .route(
            "/email/{token}",
            get(confirm_email_form).post(confirm_email),
        )
        .route("/reset", get(reset_form).post(reset))
        .route("/reset/{token}", get(new_password_form).post(new_password))
        .merge(crate::passkeys::http::public_routes())
        .layer(Extension(accounts))
}

/// The signed-in user's settings, as an offering at `/private/settings`.
pub struct SettingsOffering {
    accounts: Arc<Accounts>,
}

impl SettingsOffering {
    /// The settings pages of `accounts`.
    pub fn new(accounts: Arc<Accounts>) -> Self {
        SettingsOffering { accounts }
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "accounts/login.html",
        include_str!("../templates/login.html"),
    ),
    (
        "accounts/signup.html",
        include_str!("../templates/signup.html"),
    ),
    (
        "accounts/message.html",
        include_str!("../templates/message.html"),
    ),
    (
        "accounts/confirm.html",
        include_str!("../templates/confirm.html"),
    ),
    (
        "accounts/reset.html",
        include_str!("../templates/reset.html"),
    ),
    (
        "accounts/new_password.html",
        include_str!("../templates/new_password.html"),
    ),
    (
        "accounts/settings.html",
        include_str!("../templates/settings.html"),
    ),
    (
        "accounts/confirm_action.html",
        include_str!("../templates/confirm_action.html"),
    ),
    (
        "accounts/admin.html",
        include_str!("../templates/admin.html"),
    ),
];

async fn confirm_email(
    Extension(acc): Extension<Arc<Accounts>>,
    api: Option<Extension<ApiRequest>>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    match acc.confirm_email_change(&token).await {
        Ok(address) => Ok(succeeded(
            api.is_some(),
            "/private/settings#email",
            "email-changed",
            "Email address changed",
            &format!("Your account now uses {address}."),
        )),
        Err(e) => link_refused(e, None).map(IntoResponse::into_response),
    }
}

impl Offering for SettingsOffering {
    fn name(&self) -> &'static str {
        "settings"
    }

    /// A log-in without applications lands on the settings; without them
    /// it would land on a 404.
    fn core(&self) -> bool {
        true
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        TEMPLATES.to_vec()
    }

    fn static_files(&self) -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("passkeys.js", include_bytes!("../static/passkeys.js")),
            ("copy.js", include_bytes!("../static/copy.js")),
        ]
    }

    fn private_routes(&self) -> Router<App> {
        Router::new()
            .merge(crate::passkeys::http::private_routes())
            .route("/totp/begin", post(totp_begin))
            .route("/totp/cancel", post(totp_cancel))
            .route(
                "/tokens/{id}/revoke",
                get(revoke_token_form).post(revoke_token),
            )
            .layer(Extension(self.accounts.clone()))
    }

    // The settings' JSON and writes, in the OpenAPI document.
    fn private_api(&self) -> utoipa_axum::router::OpenApiRouter<App> {
        use utoipa_axum::routes;
        utoipa_axum::router::OpenApiRouter::new()
            .routes(routes!(crate::settings::settings))
            .routes(routes!(crate::settings::change_password))
            .routes(routes!(crate::settings::create_token))
            .routes(routes!(crate::settings::change_email))
            .routes(routes!(crate::settings::totp_switch))
            .layer(Extension(self.accounts.clone()))
    }
}
