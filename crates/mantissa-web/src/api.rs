//! The JSON API's own parts: what `/api/…` answers when a page would have
//! redirected or shown an error, the request bodies it reads, and the
//! OpenAPI document that describes it.
//!
//! Every page answers `/api/<its path>` with its data as JSON
//! ([`Page`](crate::Page)); this module makes the rest of `/api/` JSON too:
//!
//! - errors are RFC 9457 problem details (`application/problem+json` with
//!   `type`, `title`, `status` and `detail`: [`Problem`]), whatever refused
//!   the request — a handler, a layer of the pipeline, axum itself;
//! - a request that needs a signed-in user and has none gets 401 with a
//!   problem, not a 303 to the HTML log-in page;
//! - a redirect to one of the site's pages goes to its JSON twin, under
//!   `/api/` too;
//! - a write reads a JSON body as well as a form ([`JsonOrForm`]) and answers
//!   with the item it created (201, with its `Location`) or changed (200)
//!   ([`Written`]), where a browser is sent back to a page (303);
//! - `/api/openapi.json` is an OpenAPI 3.1 document of the API, made from
//!   the routes themselves.
//!
//! Why utoipa (with utoipa-axum) and not aide, for the document: both
//! support axum 0.8 and write OpenAPI 3.1. aide documents a handler through
//! traits on its argument and return types (`OperationInput`,
//! `OperationOutput`), so every type a Mantissa handler returns — a
//! [`Page`](crate::Page), whose JSON is a template's context, or a redirect
//! that is JSON only under `/api/` — would need an implementation that
//! cannot know the shape of the data, and its `ApiRouter` replaces axum's
//! handler routing. utoipa describes an operation in an attribute next to
//! the handler (`#[utoipa::path]`) with schemas derived from the types the
//! handler serializes (`#[derive(ToSchema)]`), and utoipa-axum's
//! `OpenApiRouter::routes(routes!(handler))` registers the route and its
//! description from that one attribute, so the path in the document is the
//! path routed: they cannot drift apart. An offering's routes stay plain
//! axum routes ([`Offering::private_api`](crate::Offering::private_api)).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{PartialSchema, ToSchema};

use crate::page::for_people;

/// The media type of a problem ([RFC 9457](https://www.rfc-editor.org/rfc/rfc9457)).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: what every error under `/api/` answers with, as
/// `application/problem+json`. `type` is `about:blank` (the status says
/// what kind of problem it is), `title` the status's phrase, and `detail`
/// what was wrong with this request, in words for people.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `about:blank`, its status.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's phrase ("Not Found").
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
}

impl Problem {
    /// The problem of `status`, with `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

/// The JSON of a page: the data its template is rendered with (see
/// [`Page`](crate::Page)), an object whose keys are the page's own.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
#[serde(transparent)]
pub struct PageData(pub std::collections::HashMap<String, serde_json::Value>);

/// The answers of a page's route under `/api/`, for its
/// `#[utoipa::path(responses(PageResponses))]`: its data, or a problem.
///
/// ```
/// use mantissa_web::{Page, PageResponses};
///
/// /// The list of plans.
/// #[utoipa::path(get, path = "/", responses(PageResponses))]
/// async fn plans() -> Page {
///     Page::new("plans.html", serde_json::json!({ "plans": [] }))
/// }
/// # let _ = plans;
/// ```
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum PageResponses {
    /// The page's data, as its template shows it. After a form, `done`
    /// says what happened; a browser is sent back to the page (303).
    #[response(status = 200)]
    Page(#[to_schema] PageData),
    /// A problem (RFC 9457): 401 for a visitor who is not signed in, 404
    /// for what is not there or may not be seen, 422 for a form's mistake
    /// (with the words the page shows beside the field), 429 when
    /// throttled.
    #[response(status = "default", content_type = "application/problem+json")]
    Problem(#[to_schema] Problem),
}

/// What a request to a page of a signed-in user answers under `/api/`
/// when nobody is signed in: 401, with the scheme to sign in by.
pub(crate) fn unauthorized() -> Response {
    let mut r = Problem::new(
        StatusCode::UNAUTHORIZED,
        "Sign in first: send an API token (Authorization: Bearer …), made on the settings page, or a session cookie.",
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The last step for an answer under `/api/`: an error that is not a
/// problem yet (a plain-text refusal from the guard, axum's empty 405, a
/// panic's 500, an HTML page) becomes one, with the same status and
/// headers (an `Allow`, a `Retry-After`), and its text as the detail.
pub(crate) async fn as_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if content_type.starts_with(PROBLEM_JSON) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = if content_type.starts_with("text/plain") {
        axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let detail = if text.is_empty() {
        default_detail(status)
    } else {
        for_people(&text)
    };
    let mut r = Problem::new(status, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().append(name.clone(), value.clone());
        }
    }
    r
}

/// A redirect under `/api/` to one of the site's pages (a form's
/// post/redirect/get, a moved page) goes to that page's JSON, under
/// `/api/` too, so that a client that follows it gets JSON, not HTML.
pub(crate) fn redirect_to_json(mut response: Response) -> Response {
    if !response.status().is_redirection() {
        return response;
    }
    let Some(target) = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
        .filter(|l| *l != "/api" && !l.starts_with("/api/") && !l.starts_with("/api?"))
    else {
        return response;
    };
    if let Ok(v) = HeaderValue::from_str(&format!("/api{target}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The detail of a problem that came with no words of its own.
pub(crate) fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "Nothing is at this address, or you may not see it.".into(),
        StatusCode::METHOD_NOT_ALLOWED => {
            "This address does not take this method; the Allow header says which it takes.".into()
        }
        s if s.is_server_error() => "Something went wrong. The error has been logged.".into(),
        s => format!(
            "The request was refused ({}).",
            s.canonical_reason().unwrap_or("error")
        ),
    }
}

/// A request body that is JSON (`application/json`) or a form
/// (`application/x-www-form-urlencoded`), read into `T` either way, so that
/// one handler serves a page's form and `/api/`. A field a form sends
/// more than once reads into a `Vec`, as a JSON array does. Anything else
/// is refused with 415; a body that does not fit `T` with 400 (either
/// kind), naming what was wrong.
///
/// ```
/// use mantissa_web::JsonOrForm;
///
/// #[derive(serde::Deserialize)]
/// struct NewNote {
///     title: String,
/// }
///
/// async fn create(JsonOrForm(note): JsonOrForm<NewNote>) -> String {
///     note.title
/// }
/// # let _ = create;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOrForm<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence == "application/json" || essence.ends_with("+json") {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            return serde_json::from_slice(&bytes).map(JsonOrForm).map_err(|e| {
                refusal(
                    StatusCode::BAD_REQUEST,
                    &format!("The JSON body could not be read: {e}."),
                )
            });
        }
        if essence == "application/x-www-form-urlencoded" {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            // serde_html_form, not serde_urlencoded (axum's `Form`): a field
            // sent more than once (ticked boxes of one name) reads into a
            // `Vec`, as the same field does from a JSON array.
            return serde_html_form::from_bytes(&bytes)
                .map(JsonOrForm)
                .map_err(|e| {
                    refusal(
                        StatusCode::BAD_REQUEST,
                        // In the words axum's `Form` would have used, which
                        // `for_people` rewords.
                        &for_people(&format!("Failed to deserialize form body: {e}")),
                    )
                });
        }
        Err(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This address takes a JSON body (application/json) or a form (application/x-www-form-urlencoded).",
        ))
    }
}

/// The site's error page (a problem under `/api/`) with `status`.
fn refusal(status: StatusCode, message: &str) -> Response {
    crate::page::error_page(status, "Something was wrong with the request", message).into_response()
}

/// What a write answers: under `/api/`, the item it created (201 Created,
/// with a `Location`) or changed (200) as JSON; on a page, a redirect (303
/// See Other) to `back`, where the browser shows the result
/// (post/redirect/get).
///
/// ```
/// use mantissa_web::Written;
///
/// #[derive(serde::Serialize)]
/// struct Note {
///     id: i64,
///     title: String,
/// }
///
/// let note = Note { id: 7, title: "Plans".into() };
/// let answer = Written::created(&note, Some("/api/users/ann/plans".into()), "/private/notes");
/// # let _ = answer;
/// ```
#[derive(Debug, Clone)]
pub struct Written {
    status: StatusCode,
    item: serde_json::Value,
    location: Option<String>,
    back: String,
}

impl Written {
    /// A new item, found at `location` if it has an address of its own.
    pub fn created(
        item: impl Serialize,
        location: Option<String>,
        back: impl Into<String>,
    ) -> Written {
        Written {
            status: StatusCode::CREATED,
            item: serde_json::to_value(item).unwrap_or_default(),
            location,
            back: back.into(),
        }
    }

    /// An item as it is after the change.
    pub fn changed(item: impl Serialize, back: impl Into<String>) -> Written {
        Written {
            status: StatusCode::OK,
            item: serde_json::to_value(item).unwrap_or_default(),
            location: None,
            back: back.into(),
        }
    }
}

/// The JSON answer of a [`Written`], kept on its redirect until the
/// pipeline knows whether the request came in under `/api/`.
#[derive(Clone)]
pub(crate) struct PendingWrite(Arc<Written>);

impl IntoResponse for Written {
    fn into_response(self) -> Response {
        let mut r = Redirect::to(&self.back).into_response();
        r.extensions_mut().insert(PendingWrite(Arc::new(self)));
        r
    }
}

/// The answer to a write that said [`Written`]: its JSON under `/api/`,
/// otherwise its redirect.
pub(crate) fn render_written(response: Response, api: bool) -> Response {
    let (mut parts, body) = response.into_parts();
    let Some(PendingWrite(written)) = parts.extensions.remove::<PendingWrite>() else {
        return Response::from_parts(parts, body);
    };
    if !api {
        return Response::from_parts(parts, body);
    }
    let mut headers: HeaderMap = parts.headers;
    headers.remove(header::LOCATION);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(location) = written
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        headers.insert(header::LOCATION, location);
    }
    let mut r = Response::new(Body::from(
        serde_json::to_vec(&written.item).unwrap_or_default(),
    ));
    *r.status_mut() = written.status;
    *r.headers_mut() = headers;
    r
}

/// The security scheme of the API's private operations: an API token
/// (`Authorization: Bearer mt_…`), made on the settings page. (A browser's
/// session cookie works too, with the CSRF token in `X-CSRF-Token` for a
/// write; the document names the token, which is what scripts use.)
pub const BEARER: &str = "token";

/// The OpenAPI document of the routes in `api`: paths under `/api`, the
/// token's security scheme, and the site's name as its title.
pub(crate) fn document(mut api: utoipa::openapi::OpenApi, site_name: &str) -> Vec<u8> {
    let paths = std::mem::take(&mut api.paths.paths);
    for (path, item) in paths {
        let path = if path == "/" {
            "/api".to_string()
        } else {
            format!("/api{path}")
        };
        api.paths.paths.insert(path, item);
    }
    api.info.title = format!("{site_name} API");
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "The JSON of the site's pages, and the writes behind their forms. \
         Errors are RFC 9457 problem details (application/problem+json)."
            .into(),
    );
    api.info.license = None;
    api.info.contact = None;
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .entry("Problem".into())
        .or_insert_with(Problem::schema);
    serde_json::to_vec_pretty(&api).unwrap_or_default()
}

/// A checkbox's value: `true` or `false` in JSON, the box's value (or
/// nothing, when it is not ticked) in a form. Read into a `bool` with
/// `#[serde(default, deserialize_with = "mantissa_web::checkbox")]`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Checkbox {
    /// JSON's.
    Bool(bool),
    /// A form's.
    Text(String),
}

/// Reads a [`Checkbox`] as a `bool`: a form's box is ticked unless its
/// value is empty, `0`, `false` or `off`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct NewToken {
///     #[serde(default, deserialize_with = "mantissa_web::checkbox")]
///     write: bool,
/// }
/// let form: NewToken = serde_urlencoded::from_str("write=on").unwrap();
/// assert!(form.write);
/// let json: NewToken = serde_json::from_str(r#"{"write": false}"#).unwrap();
/// assert!(!json.write);
/// ```
pub fn checkbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::Deserialize;
    Ok(match Option::<Checkbox>::deserialize(d)? {
        None => false,
        Some(Checkbox::Bool(b)) => b,
        Some(Checkbox::Text(t)) => !matches!(t.trim(), "" | "0" | "false" | "off"),
    })
}
