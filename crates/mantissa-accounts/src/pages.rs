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
use mantissa_web::{App, ClientInfo, Offering, Owner, Page, SESSION_LIFETIME, Session, WebError};
use serde::Deserialize;
use serde_json::json;

use crate::service::{AccountError, Accounts};

/// How long "remember me" keeps a session.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

fn ip(req_ip: Option<Extension<ClientInfo>>) -> Option<IpAddr> {
    req_ip.map(|Extension(c)| c.peer.ip())
}

/// Where to go after logging in when `next` says nowhere (or nowhere safe).
const HOME: &str = "/private/settings";

/// A path of this site to go to after logging in; anything else goes to
/// [`HOME`].
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
pub(crate) fn safe_next(next: &str) -> String {
    // Any origin stands for the site's: only "the same one" matters, and
    // the answer carries no origin.
    const SITE: &str = "http://site.invalid/";
    if next.is_empty() || next.chars().any(char::is_control) || next.trim() != next {
        return HOME.into();
    }
    let Ok(base) = url::Url::parse(SITE) else {
        return HOME.into();
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
            local
        }
        _ => HOME.into(),
    }
}

/// The status that answers an account error the person can act on.
fn status_of(e: &AccountError) -> StatusCode {
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
fn shown_again(value: &str) -> &str {
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

#[derive(Deserialize)]
struct LoginForm {
    who: String,
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
            session.begin(&app, Some(user), lifetime).await?;
            Ok(Redirect::to(&safe_next(&f.next)).into_response())
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
                json!({ "next": safe_next(&f.next), "who": shown_again(&f.who), "error": e.to_string(), "signup_open": open,
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
    Ok(Redirect::to("/").into_response())
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
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    invitation: String,
}

async fn signup(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    Form(f): Form<SignupForm>,
) -> Result<Page, WebError> {
    let invitation = (!f.invitation.is_empty()).then_some(f.invitation.as_str());
    match acc
        .signup(ip(client), &f.username, &f.email, &f.password, invitation)
        .await
    {
        Ok(()) => Ok(message(
            "Check your email",
            &format!(
                "We sent a link to {}. Follow it to activate your account.",
                f.email.trim()
            ),
            None,
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
            Ok(p)
        }
        Err(e) => failed(e),
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
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    match acc.verify(&token).await {
        Ok(_) => Ok(message(
            "Email verified",
            "Your account is ready.",
            Some(("/login", "Log in")),
        )),
        Err(e) => link_refused(e, None),
    }
}

async fn unlock(
    Extension(acc): Extension<Arc<Accounts>>,
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    match acc.unlock(&token).await {
        Ok(_) => Ok(message(
            "Account unlocked",
            "You can log in again.",
            Some(("/login", "Log in")),
        )),
        Err(e) => link_refused(e, None),
    }
}

async fn reset_form() -> Page {
    Page::new("accounts/reset.html", json!({}))
}

#[derive(Deserialize)]
struct ResetForm {
    email: String,
}

async fn reset(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    Form(f): Form<ResetForm>,
) -> Result<Page, WebError> {
    match acc.request_reset(ip(client), &f.email).await {
        Ok(()) => Ok(message(
            "Check your email",
            "If an account has this address, we sent it a link to choose a new password.",
            None,
        )),
        Err(e @ (AccountError::Throttled | AccountError::Wait { .. })) => {
            let mut p = message("Too many attempts", &e.to_string(), None);
            p.status = StatusCode::TOO_MANY_REQUESTS;
            Ok(p)
        }
        Err(e @ AccountError::TooLong { .. }) => {
            let mut p = message(
                "Not an email address",
                &e.to_string(),
                Some(("/reset", "Try again")),
            );
            p.status = StatusCode::BAD_REQUEST;
            Ok(p)
        }
        Err(e) => failed(e),
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
    password: String,
}

async fn new_password(
    Extension(acc): Extension<Arc<Accounts>>,
    Path(token): Path<String>,
    Form(f): Form<NewPasswordForm>,
) -> Result<Page, WebError> {
    match acc.reset(&token, &f.password).await {
        Ok(_) => Ok(message(
            "Password changed",
            "Your new password is set, and every session of your account has ended.",
            Some(("/login", "Log in")),
        )),
        Err(AccountError::Invalid(m)) => {
            let mut p = Page::new("accounts/new_password.html", json!({ "error": m }));
            p.status = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(p)
        }
        Err(e) => link_refused(e, Some(("/reset", "Get a new link"))),
    }
}

/// The account routes outside `/private/`, and the admin console.
pub fn routes(app: &App, accounts: Arc<Accounts>) -> Router<App> {
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
        "accounts/admin.html",
        include_str!("../templates/admin.html"),
    ),
];

pub(crate) async fn settings_page(
    app: &App,
    acc: &Accounts,
    user: &str,
    notice: Option<&str>,
    error: Option<String>,
    new_token: Option<String>,
) -> Result<Page, WebError> {
    settings_page_with(app, acc, user, notice, error, new_token, None).await
}

async fn settings_page_with(
    app: &App,
    acc: &Accounts,
    user: &str,
    notice: Option<&str>,
    error: Option<String>,
    new_token: Option<String>,
    totp_setup: Option<(String, String)>,
) -> Result<Page, WebError> {
    let name = user.to_string();
    let (totp_enabled, emails) = app
        .site()
        .store()
        .read(move |r| {
            let Some(a) = r
                .query::<crate::model::Account>()
                .filter(crate::model::Account::username.eq(name))
                .first()?
            else {
                return Ok((false, Vec::new()));
            };
            let emails = r
                .query::<crate::model::EmailAddress>()
                .filter(crate::model::EmailAddress::account.eq(a.id()))
                .column(crate::model::EmailAddress::address)?;
            Ok((a.totp_enabled, emails))
        })
        .await?;
    let site = app.site().clone();
    let u = user.to_string();
    let tokens = tokio::task::spawn_blocking(move || crate::tokens::list(&site, &u))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let tokens: Vec<_> = tokens
        .into_iter()
        .map(|(id, name, scopes)| json!({ "id": id, "name": name, "scopes": scopes }))
        .collect();
    let passkeys: Vec<_> = acc
        .passkeys(user)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .into_iter()
        .map(|k| {
            json!({
                "id": k.id, "name": k.name, "created": shown_time(k.created),
                "last_used": k.last_used.map(shown_time),
            })
        })
        .collect();
    let passkeys_unavailable = acc.passkeys_available().err().map(|e| e.to_string());
    Ok(Page::new(
        "accounts/settings.html",
        json!({
            "user": user, "notice": notice, "error": error, "tokens": tokens, "new_token": new_token,
            "totp_enabled": totp_enabled,
            "emails": emails,
            "totp_setup": totp_setup.map(|(secret, url)| json!({ "secret": secret, "url": url })),
            "passkeys": passkeys, "passkeys_unavailable": passkeys_unavailable,
        }),
    ))
}

#[derive(Deserialize, Default)]
struct SettingsQuery {
    #[serde(default)]
    notice: String,
}

async fn settings(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Query(q): Query<SettingsQuery>,
) -> Result<Page, WebError> {
    // Notices that a script's navigation asks for, by name: never text
    // from the URL.
    let notice = match q.notice.as_str() {
        "passkey-added" => Some("Your passkey was added."),
        _ => None,
    };
    settings_page(&app, &acc, &owner.name, notice, None, None).await
}

/// A time as the settings page shows it: `2026-11-25 23:12 UTC`.
fn shown_time(t: mantissa_store::Timestamp) -> String {
    let s = t.to_string();
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => s,
    }
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    #[serde(default)]
    write: Option<String>,
}

async fn create_token(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    Form(f): Form<NewToken>,
) -> Result<Page, WebError> {
    if session.token_scopes().is_some() {
        // A token cannot make tokens: that needs the person, signed in.
        return Err(WebError::NotFound);
    }
    let site = app.site().clone();
    let user = owner.name.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::tokens::create(&site, &user, &f.name, f.write.is_some())
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    match made {
        Ok(token) => settings_page(&app, &acc, &owner.name, None, None, Some(token)).await,
        Err(mantissa_store::StoreError::App(m)) => {
            settings_page(&app, &acc, &owner.name, None, Some(m), None).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ChangeEmail {
    email: String,
    password: String,
}

async fn change_email(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    Form(f): Form<ChangeEmail>,
) -> Result<Page, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    match acc
        .request_email_change(&owner.name, &f.password, &f.email)
        .await
    {
        Ok(()) => {
            let notice = format!("We sent a link to {}; follow it to finish.", f.email.trim());
            settings_page(&app, &acc, &owner.name, Some(&notice), None, None).await
        }
        Err(AccountError::BadCredentials) => {
            let mut p = settings_page(
                &app,
                &acc,
                &owner.name,
                None,
                Some("The password is wrong.".into()),
                None,
            )
            .await?;
            p.status = StatusCode::UNAUTHORIZED;
            Ok(p)
        }
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => {
            let mut p =
                settings_page(&app, &acc, &owner.name, None, Some(e.to_string()), None).await?;
            p.status = status_of(&e);
            Ok(p)
        }
        Err(e) => failed(e),
    }
}

async fn confirm_email(
    Extension(acc): Extension<Arc<Accounts>>,
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    match acc.confirm_email_change(&token).await {
        Ok(address) => Ok(message(
            "Email address changed",
            &format!("Your account now uses {address}."),
            Some(("/private/settings", "Settings")),
        )),
        Err(e) => link_refused(e, None),
    }
}

async fn totp_begin(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
) -> Result<Page, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    match acc.totp_begin(&owner.name).await {
        Ok(setup) => {
            settings_page_with(&app, &acc, &owner.name, None, None, None, Some(setup)).await
        }
        Err(
            e @ (AccountError::Invalid(_) | AccountError::Throttled | AccountError::Wait { .. }),
        ) => settings_refused(&app, &acc, &owner.name, e).await,
        Err(e) => failed(e),
    }
}

/// The settings page again, saying why a change was refused.
async fn settings_refused(
    app: &App,
    acc: &Arc<Accounts>,
    user: &str,
    e: AccountError,
) -> Result<Page, WebError> {
    let mut p = settings_page(app, acc, user, None, Some(e.to_string()), None).await?;
    p.status = status_of(&e);
    Ok(p)
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
}

async fn totp_switch(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    Path(switch): Path<String>,
    Form(f): Form<CodeForm>,
) -> Result<Page, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    let on = match switch.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(WebError::NotFound),
    };
    match acc.totp_set(&owner.name, &f.code, on).await {
        Ok(()) => {
            let notice = if on {
                "Two-factor log-in is on."
            } else {
                "Two-factor log-in is off."
            };
            settings_page(&app, &acc, &owner.name, Some(notice), None, None).await
        }
        Err(
            e @ (AccountError::Invalid(_) | AccountError::Throttled | AccountError::Wait { .. }),
        ) => settings_refused(&app, &acc, &owner.name, e).await,
        Err(e) => failed(e),
    }
}

async fn revoke_token(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
) -> Result<Page, WebError> {
    let site = app.site().clone();
    let user = owner.name.clone();
    let revoked = tokio::task::spawn_blocking(move || crate::tokens::revoke(&site, &user, id))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    if !revoked {
        return Err(WebError::NotFound);
    }
    settings_page(
        &app,
        &acc,
        &owner.name,
        Some("The token was revoked."),
        None,
        None,
    )
    .await
}

#[derive(Deserialize)]
struct ChangePassword {
    current: String,
    new: String,
}

async fn change_password(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    Form(f): Form<ChangePassword>,
) -> Result<Page, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    let (notice, error, status) = match acc
        .change_password(&owner.name, &f.current, &f.new, session.token_hash())
        .await
    {
        Ok(()) => (
            Some("Your password was changed; your other sessions have ended."),
            None,
            StatusCode::OK,
        ),
        Err(AccountError::BadCredentials) => (
            None,
            Some("The current password is wrong.".to_string()),
            StatusCode::UNAUTHORIZED,
        ),
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => (None, Some(e.to_string()), status_of(&e)),
        Err(e) => return failed(e),
    };
    let mut p = settings_page(&app, &acc, &owner.name, notice, error, None).await?;
    p.status = status;
    Ok(p)
}

impl Offering for SettingsOffering {
    fn name(&self) -> &'static str {
        "settings"
    }

    /// Every log-in lands on the settings; without them it lands on a 404.
    fn core(&self) -> bool {
        true
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        TEMPLATES.to_vec()
    }

    fn static_files(&self) -> Vec<(&'static str, &'static [u8])> {
        vec![("passkeys.js", include_bytes!("../static/passkeys.js"))]
    }

    fn private_routes(&self) -> Router<App> {
        Router::new()
            .merge(crate::passkeys::http::private_routes())
            .route("/", get(settings))
            .route("/password", post(change_password))
            .route("/tokens", post(create_token))
            .route("/totp/begin", post(totp_begin))
            .route("/email", post(change_email))
            .route("/totp/{switch}", post(totp_switch))
            .route("/tokens/{id}/revoke", post(revoke_token))
            .layer(Extension(self.accounts.clone()))
    }
}
