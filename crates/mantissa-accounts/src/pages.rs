//! The account pages: `/login`, `/logout`, `/signup`, `/verify/…`,
//! `/reset`, `/reset/…`, `/unlock/…`, `/email/…`, `/unsubscribe/…`
//! ([`crate::unsubscribe`]), and the signed-in user's
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
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use mantissa_web::{
    ApiRequest, App, ClientInfo, CsrfToken, JsonOrForm, Offering, Page, PageResponses,
    SESSION_LIFETIME, Session, WebError, Written,
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        AccountError::SignupClosed(_) => StatusCode::FORBIDDEN,
        AccountError::Taken(_) | AccountError::AddressTaken(_) => StatusCode::CONFLICT,
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
    let why = e.to_string();
    Ok(message("Link not valid", &why, retry).refused(StatusCode::NOT_FOUND, why))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct NextQuery {
    /// Where to go after logging in: an address on this site.
    #[serde(default)]
    next: String,
}

/// Whether anyone may ask for an account (the log-in form links to
/// sign-up then).
async fn signup_open(acc: &Accounts) -> Result<bool, WebError> {
    let mechanism = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(mechanism != "closed")
}

/// The log-in form. Under `/api/` its data carries the CSRF token a
/// log-in with a session cookie must send back (`X-CSRF-Token`), as the
/// form's hidden field does in a browser.
#[utoipa::path(
    get,
    path = "/login",
    operation_id = "login_form",
    tag = "accounts",
    params(NextQuery),
    responses(PageResponses)
)]
async fn login_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(csrf): Extension<CsrfToken>,
    api: Option<Extension<ApiRequest>>,
    Query(q): Query<NextQuery>,
) -> Result<Page, WebError> {
    let open = signup_open(&acc).await?;
    let csrf_token = api.map(|_| csrf.value().to_string());
    Ok(Page::new(
        "accounts/login.html",
        json!({ "next": q.next, "who": "", "error": null, "signup_open": open,
                "passkeys": acc.passkeys_available().is_ok(), "csrf_token": csrf_token }),
    ))
}

/// A platform form's fields all have defaults: one sent without a field
/// is refused on the form, saying why, not with axum's bare "missing
/// field" text.
#[derive(Deserialize, utoipa::ToSchema)]
struct LoginForm {
    /// The user name or an email address of the account.
    #[schema(required = true, max_length = 254)]
    #[serde(default)]
    who: String,
    /// Its password.
    #[schema(required = true, max_length = 1024)]
    #[serde(default)]
    password: String,
    /// A current code of the authenticator app, when two-factor log-in is on.
    #[serde(default)]
    code: Option<String>,
    /// Whether the session outlives the browser (30 days).
    #[schema(value_type = Option<mantissa_web::Checkbox>)]
    #[serde(default, deserialize_with = "mantissa_web::checkbox")]
    remember: bool,
    /// Where to go after: an address on this site.
    #[serde(default)]
    next: String,
}

/// What a log-in answers under `/api/` (a browser is sent to `next`).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LoggedIn {
    /// Who is signed in now.
    user: String,
    /// Where a browser would have gone: the first application, or `next`.
    next: String,
}

/// `POST /login`: a session (its cookie, and a new CSRF token in
/// `X-CSRF-Token` under `/api/`).
#[utoipa::path(post, path = "/login", operation_id = "login", tag = "accounts",
    request_body(content(
        (LoginForm = "application/json"),
        (LoginForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in (a browser is sent to `next`, 303)", body = LoggedIn),
        (status = "default", description = "A problem: 401 for a wrong name, password or code, or an account that cannot log in; 429 when throttled",
            body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    client: Option<Extension<ClientInfo>>,
    JsonOrForm(f): JsonOrForm<LoginForm>,
) -> Result<Response, WebError> {
    match acc
        .login_with_code(ip(client), &f.who, &f.password, f.code.as_deref())
        .await
    {
        Ok(user) => {
            let lifetime = if f.remember {
                REMEMBER_FOR
            } else {
                SESSION_LIFETIME
            };
            session.begin(&app, Some(user.clone()), lifetime).await?;
            let to = match safe_next(&f.next) {
                Some(next) => next,
                None => crate::nav::landing(&app, &user).await,
            };
            Ok(Written::changed(
                LoggedIn {
                    user,
                    next: to.clone(),
                },
                to,
            )
            .into_response())
        }
        Err(
            e @ (AccountError::BadCredentials
            | AccountError::NotActive(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }
            | AccountError::CodeNeeded),
        ) => {
            let open = signup_open(&acc).await?;
            let why = e.to_string();
            let page = Page::new(
                "accounts/login.html",
                json!({ "next": safe_next(&f.next).unwrap_or_default(), "who": shown_again(&f.who), "error": why, "signup_open": open,
                        "passkeys": acc.passkeys_available().is_ok() }),
            );
            Ok(page.refused(status_of(&e), why).into_response())
        }
        Err(e) => failed(e).map(IntoResponse::into_response),
    }
}

/// `POST /logout`: ends the session.
#[utoipa::path(post, path = "/logout", operation_id = "logout", tag = "accounts",
    responses(
        (status = 200, description = "Logged out: `user` is null (a browser is sent to the front page, 303)", body = std::collections::HashMap<String, Option<String>>),
        (status = "default", description = "A problem", body = mantissa_web::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(app): State<App>,
    Extension(session): Extension<Session>,
) -> Result<Response, WebError> {
    session.end(&app).await?;
    Ok(Written::changed(
        json!({ "user": null }),
        mantissa_web::done_url("/", "logged-out"),
    )
    .into_response())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SignupQuery {
    /// The invitation's code, from its link.
    #[serde(default)]
    invitation: String,
}

/// `GET /signup`: the sign-up form (403 while sign-up is closed).
#[utoipa::path(
    get,
    path = "/signup",
    operation_id = "signup_form",
    tag = "accounts",
    params(SignupQuery),
    responses(PageResponses)
)]
async fn signup_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Query(q): Query<SignupQuery>,
) -> Result<Page, WebError> {
    let mechanism = acc
        .signup_mechanism()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    if mechanism == "closed" || (mechanism == "invitation" && q.invitation.is_empty()) {
        let why = "New accounts on this site are made by its administrators.";
        return Ok(message("Sign-up is closed", why, None).refused(StatusCode::FORBIDDEN, why));
    }
    Ok(Page::new(
        "accounts/signup.html",
        json!({ "invitation": q.invitation, "username": "", "email": "", "error": null }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct SignupForm {
    /// The user name: lowercase letters, digits, `.`, `_` and `-`,
    /// starting with a letter or a digit.
    #[schema(required = true, pattern = "^[a-z0-9][a-z0-9._-]{1,63}$")]
    #[serde(default)]
    username: String,
    /// The address the link to verify goes to.
    #[schema(required = true, format = Email, max_length = 254)]
    #[serde(default)]
    email: String,
    /// At least 10 characters.
    #[schema(required = true, min_length = 10, max_length = 1024)]
    #[serde(default)]
    password: String,
    /// The invitation's code, when sign-up is by invitation.
    #[serde(default)]
    invitation: String,
}

/// `POST /signup`: mails a link to verify the address.
#[utoipa::path(post, path = "/signup", operation_id = "signup", tag = "accounts",
    request_body(content(
        (SignupForm = "application/json"),
        (SignupForm = "application/x-www-form-urlencoded"),
    )),
    responses(PageResponses))]
async fn signup(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    api: Option<Extension<ApiRequest>>,
    JsonOrForm(f): JsonOrForm<SignupForm>,
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
            // A bad invitation: the form is shown again, to correct it.
            | AccountError::BadLink
            | AccountError::SignupClosed(_)
            | AccountError::Taken(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => {
            let why = e.to_string();
            let p = Page::new(
                "accounts/signup.html",
                json!({ "invitation": shown_again(&f.invitation), "username": shown_again(&f.username),
                        "email": shown_again(&f.email), "error": why }),
            );
            Ok(p.refused(status_of(&e), why).into_response())
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

/// `GET /verify/{token}`: the page of a mailed link (nothing happens until its button).
#[utoipa::path(get, path = "/verify/{token}", operation_id = "verify_form", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
async fn verify_form() -> Page {
    confirm(
        "Verify your email address",
        "Press the button to confirm that this address is yours and finish signing up.",
        "Verify my address",
    )
}

/// `GET /unlock/{token}`: the page of a mailed link.
#[utoipa::path(get, path = "/unlock/{token}", operation_id = "unlock_form", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
async fn unlock_form() -> Page {
    confirm(
        "Unlock your account",
        "Your account was locked after too many failed log-ins. Press the button to unlock it.",
        "Unlock my account",
    )
}

/// `GET /email/{token}`: the page of a mailed link.
#[utoipa::path(get, path = "/email/{token}", operation_id = "confirm_email_form", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
async fn confirm_email_form() -> Page {
    confirm(
        "Change your email address",
        "Press the button to move your account to this new address.",
        "Use this address",
    )
}

/// `POST /verify/{token}`: verifies the address.
#[utoipa::path(post, path = "/verify/{token}", operation_id = "verify", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
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

/// `POST /unlock/{token}`: unlocks the account.
#[utoipa::path(post, path = "/unlock/{token}", operation_id = "unlock", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
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

/// `GET /reset`: the form that asks for a link to choose a new password.
#[utoipa::path(
    get,
    path = "/reset",
    operation_id = "reset_form",
    tag = "accounts",
    responses(PageResponses)
)]
async fn reset_form() -> Page {
    Page::new("accounts/reset.html", json!({ "email": "", "error": null }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ResetForm {
    /// The account's address.
    #[schema(required = true, format = Email, max_length = 254)]
    #[serde(default)]
    email: String,
}

/// `POST /reset`: mails the link, if an account has the address (the
/// answer is the same either way).
#[utoipa::path(post, path = "/reset", operation_id = "reset", tag = "accounts",
    request_body(content(
        (ResetForm = "application/json"),
        (ResetForm = "application/x-www-form-urlencoded"),
    )),
    responses(PageResponses))]
async fn reset(
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
    api: Option<Extension<ApiRequest>>,
    JsonOrForm(f): JsonOrForm<ResetForm>,
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
            let why = e.to_string();
            Ok(message("Too many attempts", &why, None)
                .refused(StatusCode::TOO_MANY_REQUESTS, why)
                .into_response())
        }
        Err(e @ (AccountError::TooLong { .. } | AccountError::Invalid(_))) => {
            let why = e.sentence();
            let page = Page::new(
                "accounts/reset.html",
                json!({ "email": shown_again(&f.email), "error": why }),
            );
            Ok(page.refused(status_of(&e), why).into_response())
        }
        Err(e) => failed(e).map(IntoResponse::into_response),
    }
}

/// `GET /reset/{token}`: the form for the new password.
#[utoipa::path(get, path = "/reset/{token}", operation_id = "new_password_form", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
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

#[derive(Deserialize, utoipa::ToSchema)]
struct NewPasswordForm {
    /// At least 10 characters.
    #[schema(required = true, min_length = 10, max_length = 1024)]
    #[serde(default)]
    password: String,
}

/// `POST /reset/{token}`: sets it, ending every session of the account.
#[utoipa::path(post, path = "/reset/{token}", operation_id = "new_password", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")),
    request_body(content(
        (NewPasswordForm = "application/json"),
        (NewPasswordForm = "application/x-www-form-urlencoded"),
    )),
    responses(PageResponses))]
async fn new_password(
    Extension(acc): Extension<Arc<Accounts>>,
    api: Option<Extension<ApiRequest>>,
    Path(token): Path<String>,
    JsonOrForm(f): JsonOrForm<NewPasswordForm>,
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
            let p = Page::new("accounts/new_password.html", json!({ "error": m }));
            Ok(p.refused(StatusCode::UNPROCESSABLE_ENTITY, m)
                .into_response())
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
pub fn routes(app: &App, accounts: Arc<Accounts>) -> OpenApiRouter<App> {
    app.set_navigation(Arc::new(crate::nav::AccountsNavigation(accounts.clone())));
    // One-click unsubscribing is POSTed by mail providers (see
    // `crate::unsubscribe`).
    app.allow_cross_site_posts(mantissa_mail::unsubscribe::PATH);
    OpenApiRouter::new()
        .merge(crate::admin::routes(app, accounts.clone()))
        .routes(routes!(login_form, login))
        .routes(routes!(logout))
        .routes(routes!(signup_form, signup))
        .routes(routes!(verify_form, verify))
        .routes(routes!(unlock_form, unlock))
        .routes(routes!(confirm_email_form, confirm_email))
        .routes(routes!(reset_form, reset))
        .routes(routes!(new_password_form, new_password))
        .routes(routes!(
            crate::unsubscribe::unsubscribe_form,
            crate::unsubscribe::unsubscribe
        ))
        .merge(OpenApiRouter::from(crate::passkeys::http::public_routes()))
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

/// `POST /email/{token}`: moves the account to the new address.
#[utoipa::path(post, path = "/email/{token}", operation_id = "confirm_email", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
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
