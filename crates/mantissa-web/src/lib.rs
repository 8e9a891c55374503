//! Mantissa's web: HTTP as a protocol of `mantissa-server`, the URL space,
//! page templates and themes, static files, sessions, CSRF protection, and
//! the JSON API.
//!
//! It owns what happens between an HTTP request arriving on an admitted
//! connection and the response leaving: the request pipeline every request
//! passes (rate limits, crawler pacing, sessions, CSRF, conditional GET,
//! security headers, access log; `pipeline.rs` says why it is one service
//! rather than a stack of layers), routing, and rendering. It must not reach into the
//! store's internals (it uses items and queries like any application) nor
//! own accounts, which belong to `mantissa-accounts`.

/// The axum this crate is built on, for offerings' routes.
pub use axum;
/// The OpenAPI crates the API's document is made with, for offerings'
/// `#[utoipa::path]` attributes and `routes!`.
pub use utoipa;
pub use utoipa_axum;

mod access;
pub mod api;
mod app;
mod config;
mod http;
mod observe;
mod offering;
mod page;
mod pipeline;
mod protect;
mod reveal;
mod session;
mod statics;
mod templates;

pub use access::{AccessPolicy, CapabilitiesFuture, PublicPolicy, VIEW, grants};
pub use api::{JsonOrForm, Problem, Written};
pub use app::{App, WebOptions};
pub use config::{AddressList, AddressListError, DEFAULT_ROBOTS, SiteConfig};
pub use http::{ClientInfo, HttpProtocol};
pub use offering::{
    Offering, OfferingState, Owner, Published, SLUG_MAX, SharedFuture, SharedRequest,
    offering_is_enabled, publish, set_offering_enabled, slugify, slugify_with_suffix,
};
pub use page::{ApiRequest, Page, Pager, WebError};
pub use pipeline::WebService;
pub use protect::is_bot;
pub use reveal::{REVEALS_PER_HOUR, Reveals};
pub use session::{
    CSRF_COOKIE, CsrfToken, SESSION_COOKIE, SESSION_LIFETIME, Session, SessionRecord, TokenAuth,
    TokenAuthenticated, TokenFuture, WRITE_SCOPE, cookie, hash_token, random_token,
};
pub use statics::{StaticFile, Statics};
pub use templates::{TemplateError, TemplateSources, Templates, obfuscate_emails};
