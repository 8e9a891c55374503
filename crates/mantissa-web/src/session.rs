//! Sessions and cross-site request forgery protection.
//!
//! Sessions live in the site store (`mantissa.session` items), so they
//! survive restarts and, on PostgreSQL, are shared by every node. The cookie
//! holds a random token; the store keeps only its SHA-256, so a copy of the
//! store does not let anyone take over a session. Cookies are `HttpOnly`,
//! `SameSite=Lax`, and over TLS (or behind a trusted proxy that says it
//! ended TLS, see `pipeline`) `Secure` and named with the `__Host-`
//! prefix (`__Host-mantissa_session`), which browsers only accept from this
//! very origin, over HTTPS, for the whole site: a neighbouring subdomain or
//! a plain-HTTP man in the middle cannot plant or overwrite them. Mantissa
//! always serves a site from the root of its own origin, so the prefix's
//! rules (`Path=/`, no `Domain`) always hold. Beginning a session (at
//! log-in) always issues a new token, so a token planted before log-in is
//! worthless; the CSRF token is renewed then too (and at log-out), so a
//! token learnt before log-in does not carry over into the signed-in
//! session. A session cookie outlives the browser only when asked to
//! ("remember me", [`Session::begin_with`]); otherwise it has no `Max-Age`
//! and ends when the browser closes, while the store still ends the session
//! after its lifetime.
//!
//! The CSRF token is compared in constant time ([`subtle`]), so timing
//! cannot tell an attacker how much of a guess was right.
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

/// A cookie's name on the wire: with the `__Host-` prefix over TLS (see the
/// module documentation).
fn wire_name(name: &str, tls: bool) -> std::borrow::Cow<'_, str> {
    if tls {
        format!("__Host-{name}").into()
    } else {
        name.into()
    }
}

/// The value of Mantissa's cookie `name` in a request: over TLS only the
/// `__Host-` one counts (a cookie without the prefix may have been planted
/// by a subdomain or over plain HTTP).
fn our_cookie<'h>(headers: &'h HeaderMap, name: &str, tls: bool) -> Option<&'h str> {
    cookie(headers, &wire_name(name, tls))
}

fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, tls: bool) -> HeaderValue {
    let name = wire_name(name, tls);
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
    /// A new session's token, and how long its cookie is kept (none: until
    /// the browser closes).
    set: Option<(String, Option<Duration>)>,
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
    /// one, that the store ends after `lifetime`. A lifetime longer than
    /// [`SESSION_LIFETIME`] is "remember me": the cookie is kept that long;
    /// otherwise the cookie ends with the browser. [`Session::begin_with`]
    /// says which explicitly.
    pub async fn begin(
        &self,
        app: &App,
        user: Option<String>,
        lifetime: Duration,
    ) -> Result<(), WebError> {
        self.begin_with(app, user, lifetime, lifetime > SESSION_LIFETIME)
            .await
    }

    /// Begins a new session for `user`, replacing the current one, that the
    /// store ends after `lifetime`; with `remember`, the browser keeps its
    /// cookie as long (`Max-Age`), otherwise the cookie is a browser-session
    /// one, gone when the browser closes.
    pub async fn begin_with(
        &self,
        app: &App,
        user: Option<String>,
        lifetime: Duration,
        remember: bool,
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
        s.set = Some((token, remember.then_some(lifetime)));
        s.clear = false;
        Ok(())
    }

    /// Whether this request began or ended a session (log-in, log-out).
    fn changed(&self) -> bool {
        let s = self.lock();
        s.set.is_some() || s.clear
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
            let mut r = crate::page::render_error_with_status(
                app,
                req,
                axum::http::StatusCode::UNAUTHORIZED,
                WebError::Forbidden("the API token is not valid".into()),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
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
    if let Some(token) = our_cookie(req.headers(), SESSION_COOKIE, is_tls(req)) {
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
            set_cookie(SESSION_COOKIE, token, *lifetime, tls),
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

    /// A new token in place of this one, given to the browser whether or
    /// not the page uses it: the old one must stop working.
    fn renewed() -> CsrfToken {
        let fresh = std::sync::OnceLock::new();
        let _ = fresh.set(random_token());
        CsrfToken {
            existing: None,
            fresh: Arc::new(fresh),
        }
    }
}

/// The CSRF token to render the page with and give the browser: a new one
/// when the request logged in or out (see the module documentation).
pub(crate) fn csrf_after(session: &Session, token: CsrfToken) -> CsrfToken {
    if session.changed() {
        CsrfToken::renewed()
    } else {
        token
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
    crate::page::render_error_with_status(
        app,
        req,
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        WebError::BadRequest(format!("the request body is larger than {limit} bytes")),
    )
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
    let existing = our_cookie(req.headers(), CSRF_COOKIE, is_tls(req))
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
    let own_authority = unsafe_method && app.takes_cross_site_posts(req.uri().path());
    if unsafe_method && !by_token && !own_authority {
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
        // Constant time: the comparison must not tell, by how long it
        // takes, how many leading characters of a guess were right.
        let matches = given.is_some_and(|g| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                g.as_bytes(),
                expected.as_bytes(),
            ))
        });
        if !matches {
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
///
/// Under `/api/` it is also sent in an `X-CSRF-Token` header: the cookie
/// is `HttpOnly`, and a client of the JSON API has no form field to read
/// it from, yet must send it back with each write made with the session
/// cookie (the token changes when it logs in).
pub(crate) fn write_csrf_cookie(token: &CsrfToken, tls: bool, api: bool, response: &mut Response) {
    if let Some(made) = token.made() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, made, None, tls));
        if api && let Ok(value) = HeaderValue::from_str(made) {
            response.headers_mut().insert("x-csrf-token", value);
        }
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
