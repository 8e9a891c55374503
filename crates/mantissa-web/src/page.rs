//! Pages: a handler's data, rendered as HTML or, under `/api/`, as JSON.
//!
//! A handler returns a [`Page`]: a template name and the data to render it
//! with. The same route answers `/x` with the rendered template and
//! `/api/x` with the data as JSON, so every page's data is available to
//! mobile apps and scripts with exactly the same access rules — the JSON is
//! produced by the same handler, not a second one that could drift.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use minijinja::Value;
use std::sync::Arc;

use crate::app::App;

/// What a handler answers: a template and its data.
#[derive(Debug, Clone)]
pub struct Page {
    /// The template (HTML only).
    pub template: &'static str,
    /// The data: the template's context, and the JSON of `/api/...`. Kept
    /// as the template engine's value, made once from the handler's data,
    /// so that rendering starts from it without another conversion.
    pub data: Value,
    /// The status.
    pub status: StatusCode,
    /// Whether the page is public content, whose e-mail addresses are
    /// hidden from visitors who are not signed in ([`Page::hiding_addresses`]).
    hide_addresses: bool,
    /// Why an internal error happened: logged always, and shown on the
    /// error page only in development (`serve --dev`).
    cause: Option<String>,
    /// What was wrong, in words for people, when the page refuses what
    /// was asked ([`Page::refused`]): the `detail` of its problem under
    /// `/api/`.
    refusal: Option<String>,
}

impl Page {
    /// A 200 page rendering `template` with `data`: anything serializable,
    /// such as a `#[derive(Serialize)]` struct or `serde_json::json!({…})`.
    ///
    /// ```
    /// use mantissa_web::Page;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Greeting<'a> {
    ///     name: &'a str,
    /// }
    ///
    /// let page = Page::new("hello.html", Greeting { name: "Ada" });
    /// assert_eq!(page.data.get_attr("name").unwrap().as_str(), Some("Ada"));
    /// ```
    pub fn new(template: &'static str, data: impl serde::Serialize) -> Page {
        Page {
            template,
            data: Value::from_serialize(data),
            status: StatusCode::OK,
            hide_addresses: false,
            cause: None,
            refusal: None,
        }
    }

    /// The page refuses what was asked, with `status` (422 for a form shown
    /// again with its mistakes, 429 when throttled…) because of `detail`:
    /// the words the page shows beside the field, and, under `/api/`, the
    /// `detail` of the RFC 9457 problem the request gets instead of the
    /// page's data.
    ///
    /// ```
    /// use mantissa_web::Page;
    /// use mantissa_web::StatusCode;
    ///
    /// let detail = "A title has 1 to 200 characters.";
    /// let page = Page::new("notes/list.html", serde_json::json!({ "problem": detail }))
    ///     .refused(StatusCode::UNPROCESSABLE_ENTITY, detail);
    /// assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    /// ```
    pub fn refused(mut self, status: StatusCode, detail: impl Into<String>) -> Page {
        self.status = status;
        self.refusal = Some(detail.into());
        self
    }

    /// Marks the page as public content, for anyone to read: visitors who
    /// are not signed in see each e-mail address in its text and JSON as a
    /// link to a page that shows it on request, so that harvesters do not
    /// find them (the `reveal` module). The front page and every published
    /// item's page are marked so; an offering marks its other public pages.
    /// Forms a visitor fills in are not: they show what was typed.
    ///
    /// ```
    /// use mantissa_web::Page;
    ///
    /// let page = Page::new("about.html", serde_json::json!({ "contact": "ada@example.org" }))
    ///     .hiding_addresses();
    /// # let _ = page;
    /// ```
    pub fn hiding_addresses(mut self) -> Page {
        self.hide_addresses = true;
        self
    }
}

/// One page of a long list, as templates and `/api/…` read it: `page`
/// (from 1), `pages`, `total` items, and the `previous` and `next` page
/// numbers where there are such pages. A list page shows `per_page` items
/// at a time, from [`Pager::skip`], so that a list of a hundred thousand
/// is never built into one answer.
///
/// ```
/// use mantissa_web::Pager;
///
/// let page = Pager::page_from("3"); // a `?page=` value; 1 for anything else
/// let pager = Pager::new(page, 120, 50);
/// assert_eq!((Pager::skip(page, 50), pager.pages, pager.next), (100, 3, None));
/// assert_eq!(Pager::page_from("zero"), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Pager {
    /// This page, from 1.
    pub page: usize,
    /// How many pages there are (at least 1).
    pub pages: usize,
    /// How many items there are on all of them.
    pub total: usize,
    /// The page before, if any.
    pub previous: Option<usize>,
    /// The page after, if any.
    pub next: Option<usize>,
}

impl Pager {
    /// The page a `?page=` value asks for: 1 for anything not a number
    /// from 1 up, so that a bad link shows the first page, not an error.
    pub fn page_from(value: &str) -> usize {
        value.trim().parse::<usize>().unwrap_or(1).max(1)
    }

    /// How many items come before page `page`.
    pub fn skip(page: usize, per_page: usize) -> usize {
        (page.max(1) - 1).saturating_mul(per_page)
    }

    /// Page `page` of `total` items, `per_page` to a page.
    pub fn new(page: usize, total: usize, per_page: usize) -> Pager {
        let page = page.max(1);
        let pages = total.div_ceil(per_page.max(1)).max(1);
        Pager {
            page,
            pages,
            total,
            previous: (page > 1).then(|| (page - 1).min(pages)),
            next: (page < pages).then_some(page + 1),
        }
    }
}

/// Marks the page a handler answered with, if it is one, as public content
/// (see [`Page::hiding_addresses`]).
pub(crate) fn hiding_addresses(mut response: Response) -> Response {
    if let Some(Pending(page)) = response.extensions_mut().remove::<Pending>() {
        let page = Arc::unwrap_or_clone(page).hiding_addresses();
        response.extensions_mut().insert(Pending(Arc::new(page)));
    }
    response
}

/// A plain-text refusal from a route (axum's answer to a form it cannot
/// read, a handler's `(StatusCode, &str)`), made into the site's error page
/// with the same status and its message in words for people: nobody is
/// left at a bare line of text such as "Failed to deserialize form body:
/// missing field `title`". Pages, successes and large answers pass as
/// they are.
pub(crate) async fn explain_plain_refusal(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/plain"));
    let small = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .is_some_and(|n| n <= 4096);
    if response.extensions().get::<Pending>().is_some()
        || !response.status().is_client_error()
        || !plain
        || !small
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4096).await else {
        return parts.status.into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let page = error_page(
        parts.status,
        "Something was wrong with the request",
        &for_people(text.trim()),
    );
    let mut r = page.into_response();
    // The handler's own headers (an `Allow`, a `Retry-After`) stay.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().append(name.clone(), value.clone());
        }
    }
    r
}

/// axum's words for a request it could not read, as a person would say it.
pub(crate) fn for_people(text: &str) -> String {
    if let Some(field) = text
        .strip_prefix("Failed to deserialize form body: missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!(
            "The form was sent without its “{field}” field. Go back, fill it in and send it again."
        );
    }
    if let Some(why) = text.strip_prefix("Failed to deserialize form body: ") {
        return format!("The form could not be read ({why}). Go back, check it and send it again.");
    }
    if text.starts_with("Form requests must have `Content-Type: application/x-www-form-urlencoded`")
    {
        return "This address takes a form sent from a web page (application/x-www-form-urlencoded)."
            .into();
    }
    if let Some(why) = text.strip_prefix("Failed to deserialize query string: ") {
        return format!("The address's query could not be read ({why}).");
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "The request could not be handled.".into(),
    }
}

/// The site's error page with `status`, `title` and `message`.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Page {
    let template = if status == StatusCode::NOT_FOUND {
        "404.html"
    } else {
        "error.html"
    };
    Page::new(
        template,
        serde_json::json!({ "error": title, "title": title, "message": message }),
    )
    .refused(status, message)
}

#[derive(Clone)]
struct Pending(Arc<Page>);

/// Whether `response` is a [`Page`] still to be rendered.
pub(crate) fn is_pending(response: &Response) -> bool {
    response.extensions().get::<Pending>().is_some()
}

/// What the layout shows around a page: who is signed in (`user`), the
/// navigation (`menu`) and what the last form did (`done`); see
/// [`crate::nav`].
#[derive(Debug, Default)]
pub(crate) struct Chrome {
    pub(crate) user: Option<String>,
    pub(crate) menu: crate::nav::Menu,
    pub(crate) done: Option<&'static str>,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = self.status.into_response();
        r.extensions_mut().insert(Pending(Arc::new(self)));
        r
    }
}

/// An error a handler can answer with. What is sent is a status and a plain
/// message; internal details are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Nothing here (also what is answered for things the visitor may not
    /// see, so that nothing leaks that they exist).
    #[error("not found")]
    NotFound,
    /// The request was malformed; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// A state-changing request failed the cross-site check.
    #[error("{0}")]
    Forbidden(String),
    /// What was asked cannot be done to the thing as it is now (approving
    /// an account that is active already, deleting one's own account); the
    /// message says why. Answered with 409 Conflict.
    #[error("{0}")]
    Conflict(String),
    /// The request was well formed, but what it asks for is not possible
    /// (an offering the site does not have); the message says why.
    /// Answered with 422.
    #[error("{0}")]
    Unprocessable(String),
    /// The address does not take this method (a form sent to a page that
    /// only shows something).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Something broke inside; logged, answered with a plain 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mantissa_store::StoreError> for WebError {
    fn from(e: mantissa_store::StoreError) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut cause = None;
        let (status, title, message) = match &self {
            WebError::NotFound => (StatusCode::NOT_FOUND, "Not found", String::new()),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m.clone()),
            WebError::Conflict(m) => (StatusCode::CONFLICT, "Not done", m.clone()),
            WebError::Unprocessable(m) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Not possible", m.clone())
            }
            WebError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Not a form",
                "This page shows something and takes no form.".into(),
            ),
            WebError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                cause = Some(m.clone());
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The error has been logged. Please try again later.".into(),
                )
            }
        };
        let mut r = Page {
            cause,
            ..error_page(status, title, &message)
        }
        .into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110: a 405 says what the address does take.
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        r
    }
}

/// Marks a request that came in under `/api/`.
#[derive(Clone, Copy, Debug)]
pub struct ApiRequest;

/// Strips `/api` from the path (remembering that it was there, in an
/// [`ApiRequest`] extension), so that the page's own route answers, and a
/// trailing `/`, so that `/x/` is `/x`. Whether it was an API request.
pub(crate) fn strip_api_prefix(req: &mut Request) -> bool {
    let path = req.uri().path();
    let (api, rest) = if path == "/api" {
        (true, "/")
    } else {
        match path.strip_prefix("/api/") {
            Some(rest) => (true, &path[4..4 + rest.len() + 1]),
            None => (false, path),
        }
    };
    let trimmed = if rest.len() > 1 {
        rest.trim_end_matches('/')
    } else {
        rest
    };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if api || trimmed != path {
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        if api {
            req.extensions_mut().insert(ApiRequest);
        }
    }
    api
}

/// Renders the [`Page`] a handler answered with, if it answered with one:
/// as HTML, or as JSON when `api`.
pub(crate) fn render_pending(
    app: &App,
    response: Response,
    api: bool,
    path: &str,
    csrf: Option<crate::session::CsrfToken>,
    chrome: Chrome,
) -> Response {
    let (mut parts, body) = response.into_parts();
    match parts.extensions.remove::<Pending>() {
        Some(Pending(page)) => {
            // The router measured the empty placeholder body.
            parts.headers.remove(header::CONTENT_LENGTH);
            render(app, &page, api, path, csrf, parts.headers, chrome)
        }
        None => crate::api::render_written(Response::from_parts(parts, body), api),
    }
}

/// Renders an error from a layer that runs before the page renderer.
pub(crate) fn render_error(app: &App, req: &Request, error: WebError) -> Response {
    let response = error.into_response();
    match response.extensions().get::<Pending>().cloned() {
        Some(Pending(page)) => render_refusal(app, req, &page),
        None => response,
    }
}

/// [`render_error`] with another status than the error's own (a 401 for a
/// token that is not valid, a 413 for a body too large).
pub(crate) fn render_error_with_status(
    app: &App,
    req: &Request,
    status: StatusCode,
    error: WebError,
) -> Response {
    let response = error.into_response();
    match response.extensions().get::<Pending>().cloned() {
        Some(Pending(page)) => {
            let mut page = Arc::unwrap_or_clone(page);
            page.status = status;
            render_refusal(app, req, &page)
        }
        None => {
            let mut r = response;
            *r.status_mut() = status;
            r
        }
    }
}

fn render_refusal(app: &App, req: &Request, page: &Page) -> Response {
    let api = req.extensions().get::<ApiRequest>().is_some();
    render(
        app,
        page,
        api,
        req.uri().path(),
        None,
        Default::default(),
        Chrome::default(),
    )
}

/// What every page's template sees: the page's data, and beside it `site`
/// (the site's public configuration), `path`, `user` (the signed-in user's
/// name, if any) and `csrf_field()` (the hidden field a form must carry),
/// which win over the data's own keys of the same names.
///
/// One object answering by name, not a map merged with the data: a page
/// costs one allocation for it, and `csrf_field` is made only by the pages
/// that call it.
#[derive(Debug)]
struct PageContext {
    site: Value,
    path: Value,
    user: Value,
    menu: Value,
    done: Value,
    csrf: Option<crate::session::CsrfToken>,
    data: Value,
    /// The cause of an internal error (`serve --dev` only).
    detail: Option<Value>,
    /// Public content seen by a visitor who is not signed in: the template
    /// formatter hides its addresses.
    hiding_addresses: bool,
}

impl minijinja::value::Object for PageContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "site" => Some(self.site.clone()),
            "path" => Some(self.path.clone()),
            "user" => Some(self.user.clone()),
            "menu" => Some(self.menu.clone()),
            "done" => Some(self.done.clone()),
            "hiding_addresses" => Some(Value::from(self.hiding_addresses)),
            "detail" if self.detail.is_some() => self.detail.clone(),
            "csrf_field" => {
                let csrf = self.csrf.clone();
                Some(Value::from_function(move || {
                    Value::from_safe_string(csrf.as_ref().map(|t| t.field()).unwrap_or_default())
                }))
            }
            name => self.data.get_attr(name).ok().filter(|v| !v.is_undefined()),
        }
    }
}

fn render(
    app: &App,
    page: &Page,
    api: bool,
    path: &str,
    csrf: Option<crate::session::CsrfToken>,
    headers: axum::http::HeaderMap,
    chrome: Chrome,
) -> Response {
    let user = chrome.user;
    if api && (page.status.is_client_error() || page.status.is_server_error()) {
        let mut r = crate::api::Problem::new(page.status, problem_detail(page)).into_response();
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                r.headers_mut().append(name.clone(), value.clone());
            }
        }
        return r;
    }
    let (content_type, body) = if api {
        let hide = page.hide_addresses && user.is_none();
        match serde_json::to_vec(&page.data).and_then(|json| hide_addresses(app, json, hide)) {
            Ok(json) => ("application/json", json),
            Err(e) => {
                // Inside the renderer: a plain 500, not another page.
                tracing::error!(error = %e, "a page's data could not be written as JSON");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong. The error has been logged.\n",
                )
                    .into_response();
            }
        }
    } else {
        let ctx = Value::from_object(PageContext {
            site: app.public_site(),
            path: Value::from(path),
            hiding_addresses: page.hide_addresses && user.is_none(),
            user: Value::from(user),
            menu: Value::from_serialize(&chrome.menu),
            done: Value::from(chrome.done),
            csrf,
            data: page.data.clone(),
            // Why a handler failed, beside the page's words: in
            // development only.
            detail: page
                .cause
                .as_deref()
                .filter(|_| app.is_dev())
                .map(Value::from),
        });
        match app.templates().render(page.template, &ctx) {
            Ok(html) => ("text/html; charset=utf-8", html.into_bytes()),
            Err(e) => return template_error(app, e),
        }
    };
    // The handler's headers, with the page's type: one map (the pipeline
    // adds a dozen more), not a new one and a copy.
    let mut headers = headers;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = page.status;
    *r.headers_mut() = headers;
    r
}

/// What a page with an error status says was wrong, for its problem
/// under `/api/`: the detail it was [refused](Page::refused) with, else its
/// `message` (a page of a few words, such as a mailed link's), else the
/// status's own words.
fn problem_detail(page: &Page) -> String {
    page.refusal
        .clone()
        .or_else(|| {
            page.data
                .get_attr("message")
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        })
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| crate::api::default_detail(page.status))
}

/// A page's JSON with the addresses in its strings hidden, when it is
/// public content seen by a visitor who is not signed in (see
/// [`crate::reveal`]). Only JSON that has an `@` at all is read back to
/// look.
fn hide_addresses(app: &App, json: Vec<u8>, hide: bool) -> Result<Vec<u8>, serde_json::Error> {
    if !hide || !json.contains(&b'@') {
        return Ok(json);
    }
    let mut value: serde_json::Value = serde_json::from_slice(&json)?;
    app.reveals().hide_in_json(&mut value);
    serde_json::to_vec(&value)
}

/// A template failed: logged with where and why; the page says so in
/// development, and only that something went wrong in production.
fn template_error(app: &App, e: crate::templates::TemplateError) -> Response {
    tracing::error!(template = %e.name, line = e.line, cause = %e.cause, "template error");
    let body = if app.templates().is_dev() {
        format!(
            "<!doctype html><meta charset=utf-8><title>Template error</title><h1>Template error</h1><pre>{}</pre>",
            minijinja::HtmlEscape(&e.to_string())
        )
    } else {
        "<!doctype html><meta charset=utf-8><title>Something went wrong</title><h1>Something went wrong</h1><p>The error has been logged. Please try again later.</p>".to_string()
    };
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}
