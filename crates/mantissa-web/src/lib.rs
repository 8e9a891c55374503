//! Mantissa's web: HTTP as a protocol of `mantissa-server`, the URL space,
//! page templates and themes, static files, sessions, CSRF protection, and
//! the JSON API.
//!
//! It owns what happens between an HTTP request arriving on an admitted
//! connection and the response leaving: the request pipeline every request
//! passes (rate limits, crawler pacing, sessions, CSRF, conditional GET,
//! security headers, access log; `pipeline.rs` says why it is one service
//! rather than a stack of layers), routing, and rendering. It also keeps
//! the site's configuration in the site store ([`SiteConfig`], and the
//! [`Port`]s the site listens on, which `mantissa-server` is handed as plain
//! addresses), and makes the server a site is served by ([`site_server`]).
//! It must not reach into the store's internals (it uses items and queries
//! like any application) nor own accounts, which belong to
//! `mantissa-accounts`.

/// The axum this crate is built on, for offerings' routes.
pub use axum;
/// The OpenAPI crates the API's document is made with, for offerings'
/// `#[utoipa::path]` attributes and `routes!`.
pub use utoipa;
pub use utoipa_axum;

// What an offering's handlers use most, so that `use mantissa::web::{..}`
// is all they import. `debug_handler` names the crate `::axum` in what it
// writes, so a crate using it lists `axum` (0.8, the `macros` feature) among
// its own dependencies too, as `mantissa new` does.
pub use axum::debug_handler;
pub use axum::extract::{Form, Json, Path, Query, State};
pub use axum::http::StatusCode;
pub use axum::response::{IntoResponse, Redirect, Response};
pub use axum::routing::{get, post};
pub use axum::{Extension, Router};
/// Serde, for `#[derive(Deserialize)]` forms and `Serialize` page data
/// (with `#[serde(crate = "mantissa::web::serde")]`).
pub use serde;
/// JSON values, for a page's data: `json!({ "title": title })`.
pub use serde_json::{self, json};

mod access;
pub mod api;
mod app;
mod config;
mod http;
mod nav;
mod observe;
mod offering;
mod page;
mod pipeline;
mod ports;
mod protect;
mod reveal;
mod session;
mod statics;
mod templates;

pub use access::{AccessPolicy, CapabilitiesFuture, PublicPolicy, VIEW, grants};
pub use api::{Checkbox, JsonOrForm, PageData, PageResponses, Problem, Written, checkbox};
pub use app::{App, WebOptions};
pub use config::{AddressList, AddressListError, DEFAULT_ROBOTS, SiteConfig};
pub use http::{ClientInfo, HttpProtocol, site_server};
pub use nav::{
    EveryOffering, FirstRun, FirstRunFuture, MESSAGES, Menu, MenuFuture, MenuLink, Navigation,
    Step, applications, done, done_url, message,
};
pub use offering::{
    InstallError, Offering, OfferingState, Owner, PublishError, Published, SLUG_MAX, SharedFuture,
    SharedRequest, offering_is_enabled, publish, set_offering_enabled, slugify,
    slugify_with_suffix,
};
pub use page::{ApiRequest, Page, Pager, WebError};
pub use pipeline::WebService;
pub use ports::{Port, PortError, TlsMode, tls_mode};
pub use protect::is_bot;
pub use reveal::{REVEALS_PER_HOUR, Reveals};
pub use session::{
    CSRF_COOKIE, CsrfToken, SESSION_COOKIE, SESSION_LIFETIME, Session, SessionRecord, TokenAuth,
    TokenAuthenticated, TokenFuture, WRITE_SCOPE, cookie, hash_token, random_token,
};
pub use statics::{StaticFile, Statics};
pub use templates::{
    TemplateError, TemplateSources, Templates, obfuscate_emails, relative_time, utc_minute,
};
