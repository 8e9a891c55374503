//! Sessions and cross-site request forgery protection.
//!
//! Sessions live in the site store (`mantissa.session` items), so they
//! survive restarts and, on PostgreSQL, are shared by every node. The cookie
//! holds a random token; the store keeps only its SHA-256, so a copy of the
//! store does not let anyone take over a session. Cookies are `HttpOnly`,
//! `SameSite=Lax`, and `Secure` over TLS. Beginning a session (at log-in)
//! always issues a new token, so a token planted before log-in is worthless.
//!
//! Every state-changing request (POST, PUT, PATCH, DELETE) must pass, in one
//! layer below every route: the browser's `Sec-Fetch-Site` must not say
//! cross-site, an `Origin` must be this host, and the form's `csrf_token`
//! field (or an `X-CSRF-Token` header) must match the `mantissa_csrf` cookie.
//! A template writes the field with `{{ csrf_field() }}`; the cookie is set
//! only on responses that did, so anonymous pages stay cacheable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use base64::Engine;
use mantissa_store::{Item, Stored, Timestamp};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::http::ClientInfo;
use crate::page::WebError;

/// The session cookie.
pub const SESSION_COOKIE: &str = "mantissa_session";
/// The CSRF cookie.
pub const CSRF_COOKIE: &str = "mantissa_csrf";
/// How long a session lasts without "remember me".
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A session, in the site store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.session", version = 1)]
pub struct SessionRecord {
    /// SHA-256 of the cookie's token, hex.
    #[item(unique)]
    pub token_hash: String,
    /// The signed-in user, if any.
    pub user: Option<String>,
    /// When it began.
    pub created: Timestamp,
    /// When it ends.
    #[item(index)]
    pub expires: Timestamp,
}

/// A random token: 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a secret token (a session's, a ticket's): its
/// SHA-256, in hex, so that a copy of the store does not give the tokens
/// away.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name` in the request's headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, tls: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie is ASCII")
}

#[derive(Default)]
struct SessionState {
    record: Option<Stored<SessionRecord>>,
    /// Signed in by an API token instead of a cookie: the user and the
    /// token's scopes.
    token: Option<(String, Vec<String>)>,
    set: Option<(String, Duration)>,
    clear: bool,
}

/// The current request's session (a request extension).
#[derive(Clone, Default)]
pub struct Session {
    state: Arc<Mutex<SessionState>>,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored hash of this session's token, if it has one (to tell it
    /// apart from the user's other sessions).
    pub fn token_hash(&self) -> Option<String> {
        self.lock().record.as_ref().map(|r| r.token_hash.clone())
    }

    /// The signed-in user, if any.
    pub fn user(&self) -> Option<String> {
        let s = self.lock();
        match &s.token {
            Some((user, _)) => Some(user.clone()),
            None => s.record.as_ref().and_then(|r| r.user.clone()),
        }
    }

    /// The scopes of the API token the request came with, if it came with
    /// one (a cookie session has every scope).
    pub fn token_scopes(&self) -> Option<Vec<String>> {
        self.lock().token.as_ref().map(|(_, s)| s.clone())
    }

    /// Begins a new session for `user` (at log-in), replacing the current
    /// one; `remember` makes it last `lifetime` instead of until the browser
    /// closes.
    pub async fn begin(
        &self,
        app: &App,
        user: Option<String>,
        lifetime: Duration,
    ) -> Result<(), WebError> {
        let token = random_token();
        let old = self.lock().record.as_ref().map(|r| r.id());
        let now = Timestamp::now();
        let record = SessionRecord {
            token_hash: hash_token(&token),
            user,
            created: now,
            expires: now.plus(lifetime),
        };
        let stored = app
            .site()
            .store()
            .write(move |tx| {
                if let Some(old) = old {
                    let _ = tx.delete(old);
                }
                tx.create(record)
            })
            .await?;
        let mut s = self.lock();
        s.record = Some(stored);
        s.set = Some((token, lifetime));
        s.clear = false;
        Ok(())
    }

    /// Ends the session (at log-out).
    pub async fn end(&self, app: &App) -> Result<(), WebError> {
        let old = self.lock().record.take().map(|r| r.id());
        if let Some(old) = old {
            app.site()
                .store()
                .write(move |tx| tx.delete_where(mantissa_store::Cond::id_is(old)).map(drop))
                .await?;
        }
        let mut s = self.lock();
        s.set = None;
        s.clear = true;
        Ok(())
    }
}

/// What a token authenticates: its user and scopes, if it is valid.
pub type TokenFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<(String, Vec<String>)>> + Send>>;

/// Turns an API token (`Authorization: Bearer …`) into a user and scopes;
/// `mantissa-accounts` provides it.
pub trait TokenAuth: Send + Sync + 'static {
    /// The user and scopes of a valid, unrevoked token.
    fn authenticate(&self, token: String) -> TokenFuture;
}

/// The scope that allows state-changing requests with a token.
pub const WRITE_SCOPE: &str = "write";

/// Marks a request authenticated by an API token: it carries no cookies a
/// forger could ride on, so it needs no CSRF token.
#[derive(Clone, Copy, Debug)]
pub struct TokenAuthenticated;

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

pub(crate) fn is_tls(req: &Request) -> bool {
    req.extensions().get::<ClientInfo>().is_some_and(|c| c.tls)
}

/// Loads the session named by the cookie (or the API token) into the
/// request's extensions; the response to send instead when an API token is
/// refused.
pub(crate) async fn load_session(app: &App, req: &mut Request) -> Result<Session, Response> {
    let session = Session::default();
    if let Some(token) = bearer(req) {
        let found = match app.token_auth() {
            Some(auth) => auth.authenticate(token).await,
            None => None,
        };
        let Some((user, scopes)) = found else {
            let mut r = crate::page::render_error(
                app,
                req,
                WebError::Forbidden("the API token is not valid".into()),
            );
            *r.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
            return Err(r);
        };
        let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method && !scopes.iter().any(|s| s == WRITE_SCOPE) {
            return Err(crate::page::render_error(
                app,
                req,
                WebError::Forbidden("this API token may only read".into()),
            ));
        }
        session.lock().token = Some((user, scopes));
        req.extensions_mut().insert(TokenAuthenticated);
        req.extensions_mut().insert(session.clone());
        return Ok(session);
    }
    if let Some(token) = cookie(req.headers(), SESSION_COOKIE) {
        let hash = hash_token(token);
        let now = Timestamp::now();
        let found = app
            .site()
            .store()
            .read(move |r| {
                r.query::<SessionRecord>()
                    .filter(SessionRecord::token_hash.eq(hash))
                    .filter(SessionRecord::expires.gt(now))
                    .first()
            })
            .await;
        match found {
            Ok(record) => session.lock().record = record,
            Err(e) => tracing::error!(error = %e, "loading a session failed"),
        }
    }
    req.extensions_mut().insert(session.clone());
    Ok(session)
}

/// Writes the session's cookie changes (a new session, or its end) into
/// `response`.
pub(crate) fn write_session_cookie(session: &Session, tls: bool, response: &mut Response) {
    let s = session.lock();
    if let Some((token, lifetime)) = &s.set {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, token, Some(*lifetime), tls),
        );
    } else if s.clear {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", Some(Duration::ZERO), tls),
        );
    }
}

/// The request's CSRF token (a request extension). A new one is made only
/// when a page writes the form field, so requests that show no form cost no
/// random bytes and set no cookie.
#[derive(Clone, Debug)]
pub struct CsrfToken {
    /// The token the browser sent in its cookie, if any.
    existing: Option<String>,
    /// A new token, made on first use.
    fresh: Arc<std::sync::OnceLock<String>>,
}

impl CsrfToken {
    /// The token.
    pub fn value(&self) -> &str {
        match &self.existing {
            Some(t) => t,
            None => self.fresh.get_or_init(random_token),
        }
    }

    /// The hidden form field carrying the token.
    pub fn field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf_token" value="{}">"#,
            self.value()
        )
    }

    /// The new token a page used, which the browser must be given.
    fn made(&self) -> Option<&String> {
        self.fresh.get()
    }
}

fn refused(app: &App, req: &Request, msg: &str) -> Response {
    tracing::warn!(
        reason = msg,
        path = req.uri().path(),
        "state-changing request refused"
    );
    crate::page::render_error(app, req, WebError::Forbidden(msg.to_string()))
}

fn too_large(app: &App, req: &Request, limit: usize) -> Response {
    let mut r = crate::page::render_error(
        app,
        req,
        WebError::BadRequest(format!("the request body is larger than {limit} bytes")),
    );
    *r.status_mut() = axum::http::StatusCode::PAYLOAD_TOO_LARGE;
    r
}

fn same_host(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// Refuses cross-site state changes (see the module documentation): the
/// refusal to send, or the request's token, also put in its extensions.
pub(crate) async fn check_csrf(app: &App, req: &mut Request) -> Result<CsrfToken, Response> {
    let existing = cookie(req.headers(), CSRF_COOKIE)
        .filter(|t| {
            t.len() == 43
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string);
    let unsafe_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let by_token = req.extensions().get::<TokenAuthenticated>().is_some();
    if unsafe_method && !by_token {
        let limit = app.limits().max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(app, req, limit));
        }
        let h = req.headers();
        if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && !matches!(site, "same-origin" | "none")
        {
            return Err(refused(app, req, "cross-site request refused"));
        }
        if let (Some(origin), Some(host)) = (
            h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            h.get(header::HOST).and_then(|v| v.to_str().ok()),
        ) && !same_host(origin, host)
        {
            return Err(refused(app, req, "request from another site refused"));
        }
        let Some(expected) = existing.clone() else {
            return Err(refused(
                app,
                req,
                "missing CSRF token: reload the form and try again",
            ));
        };
        let header_token = h
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let given = match header_token {
            Some(t) => Some(t),
            None => {
                let is_form = h
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
                if is_form {
                    let body = std::mem::replace(req.body_mut(), Body::empty());
                    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                        return Err(too_large(app, req, limit));
                    };
                    let token = url_form_value(&bytes, "csrf_token");
                    *req.body_mut() = Body::from(bytes);
                    token
                } else {
                    None
                }
            }
        };
        if given.as_deref() != Some(expected.as_str()) {
            return Err(refused(
                app,
                req,
                "missing or wrong CSRF token: reload the form and try again",
            ));
        }
    }
    let token = CsrfToken {
        existing,
        fresh: Arc::default(),
    };
    req.extensions_mut().insert(token.clone());
    Ok(token)
}

/// Gives the browser the CSRF token a page made, if it made one.
pub(crate) fn write_csrf_cookie(token: &CsrfToken, tls: bool, response: &mut Response) {
    if let Some(made) = token.made() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, made, None, tls));
    }
}

/// One field of an `application/x-www-form-urlencoded` body.
fn url_form_value(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
