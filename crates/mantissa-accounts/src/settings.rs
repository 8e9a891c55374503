//! The signed-in user's settings at `/private/settings`: password, email
//! address, two-factor log-in, passkeys and API tokens.
//!
//! Every form posts, then redirects back to the page (POST-redirect-GET)
//! with `?done=KEY` ([`mantissa_web::done`]), and the layout says at the
//! top what happened. A form that is refused is shown again at once, with
//! status 422 (429 when the person must wait), the message beside its
//! field and what was typed kept — never a password. Its fields all have
//! defaults, so that a form sent without one is told so beside it rather
//! than with a bare "Bad request".
//!
//! Two exceptions to the redirect, both on purpose: a new API token is
//! shown on the page that answers its POST, once, since a secret must not
//! travel in an address; and under `/api/` every answer is the page's data
//! as JSON, as before (the redirect is for browsers).
//!
//! Removing a passkey and revoking a token ask first: their buttons lead to
//! a page that says what will happen and whose button does it. Neither can
//! be undone (a token's secret is not kept; a removed passkey is added
//! again from the device), and the confirmation says so.
//!
//! Two-factor set-up keeps its new secret until a right code turns it on,
//! so a mistyped code shows the same QR code and key again. The QR code is
//! made on the server, as SVG ([`crate::totp::qr_svg`]), and names the site
//! as the issuer.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mantissa_web::{
    ApiRequest, App, JsonOrForm, Owner, Page, PageResponses, Session, WebError, done,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::pages::{PERSON_ONLY, status_of};
use crate::service::{AccountError, Accounts};

/// The settings page's address.
pub(crate) const SETTINGS: &str = "/private/settings";

/// What a refused form shows again: messages beside fields and the values
/// typed, by field name.
#[derive(Default)]
pub(crate) struct Shown {
    errors: Map<String, Value>,
    values: Map<String, Value>,
    new_token: Option<String>,
    /// Under `/api/`: what the form did.
    done: Option<&'static str>,
}

impl Shown {
    /// `message` beside `field`.
    fn error(field: &str, message: impl Into<String>) -> Shown {
        let mut s = Shown::default();
        s.errors.insert(field.into(), Value::from(message.into()));
        s
    }

    /// With `value` kept in `field`.
    fn keeping(mut self, field: &str, value: &str) -> Shown {
        self.values.insert(
            field.into(),
            Value::from(crate::pages::shown_again(value).to_string()),
        );
        self
    }
}

/// The settings page of `user`, showing `shown`.
pub(crate) async fn settings_page(
    app: &App,
    acc: &Accounts,
    user: &str,
    shown: Shown,
) -> Result<Page, WebError> {
    let name = user.to_string();
    let (totp_enabled, totp_pending, emails) = app
        .site()
        .store()
        .read(move |r| -> mantissa_store::Result<_> {
            let Some(a) = r
                .query::<crate::model::Account>()
                .filter(crate::model::Account::username.eq(name))
                .first()?
            else {
                return Ok((false, None, Vec::new()));
            };
            let emails = r
                .query::<crate::model::EmailAddress>()
                .filter(crate::model::EmailAddress::account.eq(a.id()))
                .column(crate::model::EmailAddress::address)?;
            let pending = (!a.totp_enabled).then(|| a.totp_secret.clone()).flatten();
            Ok((a.totp_enabled, pending, emails))
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
                "id": k.id, "name": k.name, "created": k.created.to_string(),
                "last_used": k.last_used.map(|t| t.to_string()),
            })
        })
        .collect();
    let passkeys_unavailable = acc.passkeys_available().err().map(|e| e.to_string());
    let issuer = app.config().name;
    let totp_setup = totp_pending.and_then(|secret| {
        let url = crate::totp::url(&secret, user, &issuer)?;
        let qr = crate::totp::qr_svg(&url);
        Some(json!({ "secret": secret, "url": url, "qr": qr }))
    });
    let failed = shown
        .errors
        .values()
        .find_map(|v| v.as_str())
        .map(str::to_string);
    let page = Page::new(
        "accounts/settings.html",
        json!({
            "user": user, "tokens": tokens, "new_token": shown.new_token,
            "errors": shown.errors, "values": shown.values, "done": shown.done,
            "totp_enabled": totp_enabled,
            "emails": emails,
            "totp_setup": totp_setup,
            "passkeys": passkeys, "passkeys_unavailable": passkeys_unavailable,
        }),
    );
    Ok(match failed {
        Some(detail) => page.refused(StatusCode::UNPROCESSABLE_ENTITY, detail),
        None => page,
    })
}

/// The settings page again, `shown` (with `status` when it is not 422).
async fn refused(
    app: &App,
    acc: &Accounts,
    user: &str,
    shown: Shown,
    status: StatusCode,
) -> Result<Response, WebError> {
    let detail = shown
        .errors
        .values()
        .find_map(|v| v.as_str())
        .map(str::to_string);
    let page = settings_page(app, acc, user, shown).await?;
    Ok(match detail {
        Some(detail) if status == StatusCode::TOO_MANY_REQUESTS => page.refused(status, detail),
        _ => page,
    }
    .into_response())
}

/// A form's success: back to the settings (at `anchor`), saying `key`'s
/// message; under `/api/`, the settings page's data.
pub(crate) async fn finished(
    app: &App,
    acc: &Accounts,
    user: &str,
    api: bool,
    key: &str,
    anchor: &str,
) -> Result<Response, WebError> {
    if api {
        let shown = Shown {
            done: mantissa_web::message(app, key),
            ..Shown::default()
        };
        return Ok(settings_page(app, acc, user, shown).await?.into_response());
    }
    Ok(done(&format!("{SETTINGS}{anchor}"), key).into_response())
}

/// What a form of the settings answers under `/api/`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum SettingsResponses {
    /// The settings, with `done` saying what happened (a browser is sent
    /// back to them, 303).
    #[response(status = 200)]
    Settings(#[to_schema] mantissa_web::PageData),
    /// A problem: 422 with the words shown beside the field for a mistake;
    /// 403 or 404 for an API token, since the settings are the signed-in
    /// person's.
    #[response(status = "default", content_type = "application/problem+json")]
    Problem(#[to_schema] mantissa_web::Problem),
}

/// `GET /private/settings`.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "settings",
    tag = "settings",
    security(("token" = [])),
    responses(PageResponses),
)]
pub(crate) async fn settings(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
) -> Result<Page, WebError> {
    settings_page(&app, &acc, &owner.name, Shown::default()).await
}

fn is_api(api: &Option<Extension<ApiRequest>>) -> bool {
    api.is_some()
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewToken {
    /// What the token is for, such as the app that will use it.
    #[schema(required = true, min_length = 1)]
    #[serde(default)]
    name: String,
    /// Whether it may write, not only read.
    #[schema(value_type = Option<mantissa_web::Checkbox>)]
    #[serde(default, deserialize_with = "mantissa_web::checkbox")]
    write: bool,
}

/// `POST /private/settings/tokens`: the new token, shown once on the page
/// that answers (see the module documentation).
#[utoipa::path(
    post,
    path = "/tokens",
    operation_id = "create_token",
    tag = "settings",
    request_body(
        description = "The form",
        content(
            (NewToken = "application/json"),
            (NewToken = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(SettingsResponses),
)]
pub(crate) async fn create_token(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    JsonOrForm(f): JsonOrForm<NewToken>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        // A token cannot make tokens: that needs the person, signed in.
        return Err(WebError::NotFound);
    }
    if f.name.trim().is_empty() {
        let shown = Shown::error(
            "token-name",
            "Give the token a name, such as the app that will use it.",
        );
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let site = app.site().clone();
    let user = owner.name.clone();
    let name = f.name.clone();
    let made =
        tokio::task::spawn_blocking(move || crate::tokens::create(&site, &user, &name, f.write))
            .await
            .map_err(|e| WebError::Internal(e.to_string()))?;
    match made {
        Ok(token) => {
            let shown = Shown {
                new_token: Some(token),
                ..Shown::default()
            };
            Ok(settings_page(&app, &acc, &owner.name, shown)
                .await?
                .into_response())
        }
        Err(AccountError::Invalid(m)) => {
            let shown = Shown::error("token-name", m).keeping("token-name", &f.name);
            refused(
                &app,
                &acc,
                &owner.name,
                shown,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ChangeEmail {
    /// The new address.
    #[schema(required = true)]
    #[serde(default)]
    email: String,
    /// The account's password.
    #[schema(required = true)]
    #[serde(default)]
    password: String,
}

/// `POST /private/settings/email`: mails a link to the new address.
#[utoipa::path(
    post,
    path = "/email",
    operation_id = "change_email",
    tag = "settings",
    request_body(
        description = "The form",
        content(
            (ChangeEmail = "application/json"),
            (ChangeEmail = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(SettingsResponses),
)]
pub(crate) async fn change_email(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
    JsonOrForm(f): JsonOrForm<ChangeEmail>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    let typed =
        |field: &str, message: String| Shown::error(field, message).keeping("new-email", &f.email);
    if f.email.trim().is_empty() {
        let shown = typed("new-email", "Type the new email address.".into());
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if f.password.is_empty() {
        let shown = typed(
            "email-password",
            "Type your password: it proves that this is you.".into(),
        );
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match acc
        .request_email_change(&owner.name, &f.password, &f.email)
        .await
    {
        Ok(()) => {
            finished(
                &app,
                &acc,
                &owner.name,
                is_api(&api),
                "email-link-sent",
                "#email",
            )
            .await
        }
        Err(AccountError::BadCredentials) => {
            let shown = typed("email-password", "The password is wrong.".into());
            refused(
                &app,
                &acc,
                &owner.name,
                shown,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => {
            let field = if matches!(e, AccountError::Invalid(_) | AccountError::TooLong { .. }) {
                "new-email"
            } else {
                "email-password"
            };
            let status = status_of(&e);
            refused(&app, &acc, &owner.name, typed(field, e.sentence()), status).await
        }
        Err(e) => Err(internal(e)),
    }
}

/// An error the person cannot act on: logged, a 500.
fn internal(e: AccountError) -> WebError {
    match e {
        AccountError::Store(e) => WebError::from(e),
        other => WebError::Internal(other.to_string()),
    }
}

/// `POST /private/settings/totp/begin`: a new secret, shown on the
/// settings page until a code turns it on.
pub(crate) async fn totp_begin(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    match acc.totp_begin(&owner.name, &app.config().name).await {
        Ok(_) => {
            if is_api(&api) {
                return Ok(settings_page(&app, &acc, &owner.name, Shown::default())
                    .await?
                    .into_response());
            }
            Ok(axum::response::Redirect::to(&format!("{SETTINGS}#two-factor")).into_response())
        }
        Err(
            e @ (AccountError::Invalid(_) | AccountError::Throttled | AccountError::Wait { .. }),
        ) => {
            let status = status_of(&e);
            refused(
                &app,
                &acc,
                &owner.name,
                Shown::error("totp-begin", e.sentence()),
                status,
            )
            .await
        }
        Err(e) => Err(internal(e)),
    }
}

/// `POST /private/settings/totp/cancel`: abandons a begun set-up.
pub(crate) async fn totp_cancel(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    acc.totp_cancel(&owner.name).await.map_err(internal)?;
    finished(
        &app,
        &acc,
        &owner.name,
        is_api(&api),
        "totp-cancelled",
        "#two-factor",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct CodeForm {
    /// A current code of the authenticator app.
    #[schema(required = true)]
    #[serde(default)]
    code: String,
}

/// `POST /private/settings/totp/on` and `…/off`, with a current code.
#[utoipa::path(
    post,
    path = "/totp/{switch}",
    operation_id = "switch_two_factor",
    tag = "settings",
    params(("switch" = String, Path, description = "on or off")),
    request_body(
        description = "The form",
        content(
            (CodeForm = "application/json"),
            (CodeForm = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(SettingsResponses),
)]
pub(crate) async fn totp_switch(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
    Path(switch): Path<String>,
    JsonOrForm(f): JsonOrForm<CodeForm>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    let (on, field, key) = match switch.as_str() {
        "on" => (true, "totp-code", "totp-on"),
        "off" => (false, "totp-off", "totp-off"),
        _ => return Err(WebError::NotFound),
    };
    if f.code.trim().is_empty() {
        let shown = Shown::error(
            field,
            "Type the six-digit code your authenticator app shows now.",
        );
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match acc.totp_set(&owner.name, &f.code, on).await {
        Ok(()) => finished(&app, &acc, &owner.name, is_api(&api), key, "#two-factor").await,
        Err(
            e @ (AccountError::Invalid(_) | AccountError::Throttled | AccountError::Wait { .. }),
        ) => {
            let status = status_of(&e);
            refused(
                &app,
                &acc,
                &owner.name,
                Shown::error(field, e.sentence()),
                status,
            )
            .await
        }
        Err(e) => Err(internal(e)),
    }
}

/// The page that asks before something is removed for good.
fn confirmation(title: &str, text: &str, action: String, button: &str, cancel: &str) -> Page {
    Page::new(
        "accounts/confirm_action.html",
        json!({ "title": title, "message": text, "action": action, "button": button,
                "cancel": format!("{SETTINGS}{cancel}") }),
    )
}

/// `GET /private/settings/tokens/{id}/revoke`: asks first.
pub(crate) async fn revoke_token_form(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
) -> Result<Page, WebError> {
    let site = app.site().clone();
    let user = owner.name.clone();
    let tokens = tokio::task::spawn_blocking(move || crate::tokens::list(&site, &user))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let (_, name, _) = tokens
        .into_iter()
        .find(|(t, _, _)| *t == id)
        .ok_or(WebError::NotFound)?;
    Ok(confirmation(
        &format!("Revoke the token \u{201c}{name}\u{201d}?"),
        "Apps and scripts that use it will no longer get in. This cannot be undone: \
         to let them in again, make a new token and give it to them.",
        format!("{SETTINGS}/tokens/{id}/revoke"),
        "Revoke the token",
        "#tokens",
    ))
}

/// `POST /private/settings/tokens/{id}/revoke`.
pub(crate) async fn revoke_token(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    api: Option<Extension<ApiRequest>>,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let site = app.site().clone();
    let user = owner.name.clone();
    let revoked = tokio::task::spawn_blocking(move || crate::tokens::revoke(&site, &user, id))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    if !revoked {
        return Err(WebError::NotFound);
    }
    finished(
        &app,
        &acc,
        &owner.name,
        is_api(&api),
        "token-revoked",
        "#tokens",
    )
    .await
}

/// `GET /private/settings/passkeys/{id}/remove`: asks first.
pub(crate) async fn remove_passkey_form(
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
) -> Result<Page, WebError> {
    let key = acc
        .passkeys(&owner.name)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or(WebError::NotFound)?;
    Ok(confirmation(
        &format!("Remove the passkey \u{201c}{}\u{201d}?", key.name),
        "You will no longer sign in with it. This cannot be undone: to use that device \
         again, add it as a new passkey.",
        format!("{SETTINGS}/passkeys/{id}/remove"),
        "Remove the passkey",
        "#passkeys",
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ChangePassword {
    /// The password now.
    #[schema(required = true)]
    #[serde(default)]
    current: String,
    /// The new one.
    #[schema(required = true)]
    #[serde(default)]
    new: String,
}

/// `POST /private/settings/password`.
#[utoipa::path(
    post,
    path = "/password",
    operation_id = "change_password",
    tag = "settings",
    request_body(
        description = "The form",
        content(
            (ChangePassword = "application/json"),
            (ChangePassword = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(SettingsResponses),
)]
pub(crate) async fn change_password(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
    JsonOrForm(f): JsonOrForm<ChangePassword>,
) -> Result<Response, WebError> {
    if session.token_scopes().is_some() {
        return Err(WebError::Forbidden(PERSON_ONLY.into()));
    }
    let no = |field: &str, message: &str| Shown::error(field, message);
    if f.current.is_empty() {
        let shown = no("current", "Type your current password.");
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if f.new.is_empty() {
        let shown = no("new", "Type the new password.");
        return refused(
            &app,
            &acc,
            &owner.name,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match acc
        .change_password(&owner.name, &f.current, &f.new, session.token_hash())
        .await
    {
        Ok(()) => {
            finished(
                &app,
                &acc,
                &owner.name,
                is_api(&api),
                "password-changed",
                "",
            )
            .await
        }
        Err(AccountError::BadCredentials) => {
            let shown = no("current", "The current password is wrong.");
            refused(
                &app,
                &acc,
                &owner.name,
                shown,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(
            e @ (AccountError::Invalid(_)
            | AccountError::Throttled
            | AccountError::Wait { .. }
            | AccountError::TooLong { .. }),
        ) => {
            let field = if matches!(e, AccountError::Invalid(_)) {
                "new"
            } else {
                "current"
            };
            let status = status_of(&e);
            refused(
                &app,
                &acc,
                &owner.name,
                Shown::error(field, e.sentence()),
                status,
            )
            .await
        }
        Err(e) => Err(internal(e)),
    }
}
