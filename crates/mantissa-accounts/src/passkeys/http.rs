//! The passkey endpoints: JSON in and out for `passkeys.js` (two requests
//! per ceremony, `…/begin` and `…/finish`), and the settings page's form
//! that removes a passkey.
//!
//! They are state-changing POSTs like any other, so they pass the web
//! layer's CSRF check: the script sends the page's form token as
//! `X-CSRF-Token`. A request whose body cannot be read answers 400 naming
//! what was wrong, and changes nothing (its challenge still works).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router, routing::post};
use mantissa_web::{ApiRequest, App, ClientInfo, Owner, SESSION_LIFETIME, Session, WebError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::PasskeyError;
use crate::pages::{REMEMBER_FOR, safe_next};
use crate::service::{AccountError, Accounts};
use crate::settings::finished;

/// Where the script goes once a passkey was added.
pub(crate) const ADDED: &str = "/private/settings?done=passkey-added#passkeys";

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn failed(e: PasskeyError) -> Response {
    let status = match &e {
        PasskeyError::Unavailable(_) => StatusCode::CONFLICT,
        PasskeyError::BadRequest(_) | PasskeyError::Expired => StatusCode::BAD_REQUEST,
        PasskeyError::Unknown | PasskeyError::Refused(_) => StatusCode::UNAUTHORIZED,
        PasskeyError::Account(AccountError::Throttled | AccountError::Wait { .. }) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        PasskeyError::Account(AccountError::NotActive(_) | AccountError::BadCredentials) => {
            StatusCode::UNAUTHORIZED
        }
        PasskeyError::Account(AccountError::Invalid(_)) => StatusCode::BAD_REQUEST,
        PasskeyError::Account(_) | PasskeyError::Internal(_) => {
            tracing::error!(error = %e, "passkey request failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong; the error has been logged, please try again later",
            );
        }
    };
    json_error(status, &e.to_string())
}

/// The request's JSON body as a `T`, or (for a 400) what was wrong, and
/// where (`credential.rawId: …`).
fn read<T: DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!("the request is not {what}: {at}{}", e.inner())
    })
}

/// A 400 for a body that [`read`] refused.
fn unreadable(message: String) -> Response {
    json_error(StatusCode::BAD_REQUEST, &message)
}

/// The browser's answer to a ceremony.
#[derive(Deserialize)]
struct Answer<C> {
    /// The id the ceremony's `…/begin` gave.
    ceremony: String,
    /// What `navigator.credentials` gave, as JSON.
    credential: C,
    /// Sign-in only: keep the session for [`REMEMBER_FOR`].
    #[serde(default)]
    remember: bool,
    /// Sign-in only: where to go next (a local path).
    #[serde(default)]
    next: String,
}

/// `POST /login/passkey/begin`: a sign-in challenge.
async fn sign_in_begin(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    client: Option<Extension<ClientInfo>>,
) -> Response {
    let ip = client.map(|Extension(c)| c.peer.ip());
    match acc.passkey_sign_in_begin(ip, &app.config().name).await {
        Ok((ceremony, options)) => {
            Json(json!({ "ceremony": ceremony, "options": options })).into_response()
        }
        Err(e) => failed(e),
    }
}

/// `POST /login/passkey/finish`: the signed challenge; logs in with a new
/// session.
async fn sign_in_finish(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(session): Extension<Session>,
    client: Option<Extension<ClientInfo>>,
    body: Bytes,
) -> Response {
    let ip = client.map(|Extension(c)| c.peer.ip());
    let answer: Answer<PublicKeyCredential> = match read(&body, "a passkey sign-in answer") {
        Ok(a) => a,
        Err(m) => return unreadable(m),
    };
    match acc
        .passkey_sign_in_finish(ip, &answer.ceremony, &answer.credential)
        .await
    {
        Ok(user) => {
            let lifetime = if answer.remember {
                REMEMBER_FOR
            } else {
                SESSION_LIFETIME
            };
            if let Err(e) = session.begin(&app, Some(user.clone()), lifetime).await {
                return failed(PasskeyError::Internal(e.to_string()));
            }
            let go = match safe_next(&answer.next) {
                Some(next) => next,
                None => crate::nav::landing(&app, &user).await,
            };
            Json(json!({ "go": go })).into_response()
        }
        Err(e) => failed(e),
    }
}

/// The account and pages routes outside `/private/`.
pub(crate) fn public_routes() -> Router<App> {
    Router::new()
        .route("/login/passkey/begin", post(sign_in_begin))
        .route("/login/passkey/finish", post(sign_in_finish))
}

/// Whether the request came with an API token instead of the person:
/// passkeys are added and removed by the person, signed in.
fn by_token(session: &Session) -> bool {
    session.token_scopes().is_some()
}

#[derive(Deserialize)]
struct NewPasskey {
    name: String,
}

/// `POST /private/settings/passkeys/begin`: a registration challenge.
async fn register_begin(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    if by_token(&session) {
        return WebError::NotFound.into_response();
    }
    let new: NewPasskey = match read(&body, "a new passkey's name") {
        Ok(n) => n,
        Err(m) => return unreadable(m),
    };
    match acc
        .passkey_register_begin(&owner.name, &new.name, &app.config().name)
        .await
    {
        Ok((ceremony, options)) => {
            Json(json!({ "ceremony": ceremony, "options": options })).into_response()
        }
        Err(e) => failed(e),
    }
}

/// `POST /private/settings/passkeys/finish`: the new credential.
async fn register_finish(
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    if by_token(&session) {
        return WebError::NotFound.into_response();
    }
    let answer: Answer<RegisterPublicKeyCredential> = match read(&body, "a new passkey") {
        Ok(a) => a,
        Err(m) => return unreadable(m),
    };
    match acc
        .passkey_register_finish(&owner.name, &answer.ceremony, &answer.credential)
        .await
    {
        Ok(_) => Json(json!({ "go": ADDED })).into_response(),
        Err(e) => failed(e),
    }
}

/// `POST /private/settings/passkeys/{id}/remove` (a form; its button is
/// on the page that asks first, [`crate::settings::remove_passkey_form`]):
/// 404 unless the passkey is the signed-in person's.
async fn remove(
    State(app): State<App>,
    Extension(acc): Extension<Arc<Accounts>>,
    Extension(owner): Extension<Owner>,
    Extension(session): Extension<Session>,
    api: Option<Extension<ApiRequest>>,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    if by_token(&session) {
        return Err(WebError::NotFound);
    }
    match acc.remove_passkey(&owner.name, id).await {
        Ok(Some(_)) => {
            finished(
                &app,
                &acc,
                &owner.name,
                api.is_some(),
                "passkey-removed",
                "#passkeys",
            )
            .await
        }
        Ok(None) => Err(WebError::NotFound),
        Err(AccountError::Store(e)) => Err(e.into()),
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}

/// The settings offering's passkey routes, under `/private/settings`.
pub(crate) fn private_routes() -> Router<App> {
    Router::new()
        .route("/passkeys/begin", post(register_begin))
        .route("/passkeys/finish", post(register_finish))
        .route(
            "/passkeys/{id}/remove",
            axum::routing::get(crate::settings::remove_passkey_form).post(remove),
        )
}
