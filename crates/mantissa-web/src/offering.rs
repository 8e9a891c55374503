//! Offerings: installable applications, and the URL space they live in.
//!
//! An offering contributes templates and static files, routes for the
//! signed-in owner under `/private/<offering>/…`, and pages for items its
//! users publish at `/users/<name>/<slug>/…`. Everything it serves passes the
//! same layers as Mantissa's own pages, and `/api/…` gives its pages' data as
//! JSON.
//!
//! Published items have stable, human-readable slugs kept in the owner's
//! store ([`Published`]); when an item's slug changes, the old URL answers
//! 301 to the new one, forever. Unknown names and slugs answer 404, as do
//! private routes for someone not signed in as their owner, so nothing
//! leaks that a thing exists.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use mantissa_store::{Item, Ref, Store, StoreError, Write};

use crate::app::App;
use crate::page::{ApiRequest, WebError};
use crate::session::Session;
use utoipa_axum::router::OpenApiRouter;

/// What a shared-item handler is asked to render.
pub struct SharedRequest {
    /// The owner's user name.
    pub owner: String,
    /// The owner's store.
    pub store: Store,
    /// The published item's type and id.
    pub item_type: String,
    /// The published item's id.
    pub item_id: i64,
    /// The path after the slug (empty for the item itself).
    pub rest: String,
    /// The signed-in visitor, if any.
    pub visitor: Option<String>,
    /// What the visitor may do (always including `view`); see
    /// [`grants`](crate::grants).
    pub capabilities: Vec<String>,
    /// `GET` (or `HEAD`), or `POST`: a form sent from the item's page, such
    /// as a visitor signing a guestbook. The site has checked its CSRF
    /// token and its size already; the offering checks what the visitor
    /// may do ([`grants`](crate::grants)) and answers `GET`-only items
    /// with [`WebError::MethodNotAllowed`].
    pub method: axum::http::Method,
    /// The body of a `POST` (empty for a `GET`).
    pub body: axum::body::Bytes,
    /// The item's own path, `/users/<owner>/<slug>` (without `rest`): where
    /// a form's answer redirects to.
    pub path: String,
    /// The query string, as sent (empty when there is none).
    pub query: String,
}

impl SharedRequest {
    /// The `POST`ed form, URL-encoded as browsers send it.
    ///
    /// A body that does not fit `T` (a missing or malformed field) is a
    /// [`WebError::BadRequest`] that names the field, in words for people.
    pub fn form<T: serde::de::DeserializeOwned>(&self) -> Result<T, WebError> {
        serde_urlencoded::from_bytes(&self.body)
            .map_err(|e| WebError::BadRequest(format!("The form could not be read: {e}.")))
    }
}

/// A boxed future answering a shared-item request.
pub type SharedFuture = Pin<Box<dyn Future<Output = Result<Response, WebError>> + Send>>;

/// An installable application. See the module documentation.
pub trait Offering: Send + Sync + 'static {
    /// A stable name: the `<offering>` of its URLs.
    fn name(&self) -> &'static str;

    /// Templates, by name (a theme may override any).
    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// The folder the offering's template files are compiled in from, read
    /// afresh on every render in development (`serve --dev`), so that an
    /// edit shows on the next reload without a rebuild. A template named
    /// `guestbook/list.html` is the file `guestbook/list.html` in it:
    ///
    /// ```
    /// # struct Guestbook;
    /// # impl mantissa_web::Offering for Guestbook {
    /// #     fn name(&self) -> &'static str { "guestbook" }
    /// fn template_dir(&self) -> Option<std::path::PathBuf> {
    ///     Some(concat!(env!("CARGO_MANIFEST_DIR"), "/templates").into())
    /// }
    /// # }
    /// ```
    ///
    /// In production, and when the folder is gone (the binary was copied
    /// elsewhere), the compiled-in [`templates`](Offering::templates) serve.
    fn template_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Static files, by path, served at `/static/<offering>/<hash>/<path>`.
    fn static_files(&self) -> Vec<(&'static str, &'static [u8])> {
        Vec::new()
    }

    /// Routes for the signed-in owner, mounted at `/private/<offering>`.
    /// Handlers find the owner as an [`Owner`] request extension.
    fn private_routes(&self) -> Router<App> {
        Router::new()
    }

    /// Routes mounted beside [`private_routes`](Offering::private_routes),
    /// at `/private/<offering>`, that are also described in the site's
    /// OpenAPI document (`/api/openapi.json`) under
    /// `/api/private/<offering>`: each handler carries a `#[utoipa::path]`
    /// attribute and is registered with utoipa-axum's `routes!`, so the
    /// path documented is the path routed. Operations that need a
    /// signed-in user say so with `security(("token" = []))`.
    ///
    /// ```
    /// use mantissa_web::utoipa_axum::{router::OpenApiRouter, routes};
    /// use mantissa_web::{App, Page};
    ///
    /// /// The list of notes.
    /// #[utoipa::path(get, path = "/", security(("token" = [])),
    ///     responses((status = 200, description = "The notes", body = Vec<String>)))]
    /// async fn list() -> Page {
    ///     Page::new("notes.html", serde_json::json!(["Plans"]))
    /// }
    ///
    /// fn private_api() -> OpenApiRouter<App> {
    ///     OpenApiRouter::new().routes(routes!(list))
    /// }
    /// # let _ = private_api;
    /// ```
    fn private_api(&self) -> OpenApiRouter<App> {
        OpenApiRouter::new()
    }

    /// Installs what the offering needs in a user's store (its powerups),
    /// when a product that includes it is given to a new account. An error
    /// (the offering's own, whatever its type) rolls all of it back.
    fn install(&self, tx: &mut Write<'_>) -> Result<(), InstallError> {
        let _ = tx;
        Ok(())
    }

    /// Renders an item of this offering that a user published.
    fn shared(&self, app: App, request: SharedRequest) -> SharedFuture {
        let _ = (app, request);
        Box::pin(async { Err(WebError::NotFound) })
    }

    /// Whether the site cannot run without it (the account settings, where
    /// every log-in lands): a core offering is always served, whatever its
    /// [`OfferingState`] says, and the admin console offers no switch for
    /// it.
    fn core(&self) -> bool {
        false
    }

    /// What the navigation calls it: a link to `/private/<name>` for the
    /// users who have it installed. `None` keeps it out of the navigation
    /// (the default for a [core](Offering::core) offering: the account
    /// settings have their own link); otherwise its name.
    fn label(&self) -> Option<&'static str> {
        (!self.core()).then(|| self.name())
    }

    /// The messages its forms' redirects may ask the layout to show, by
    /// key (see [`done`](crate::done)): `("note-saved", "Note saved.")`.
    /// Keys are shared by the whole site: begin them with the offering's
    /// name.
    fn messages(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

/// Whether an offering is switched on for the site. Offerings are compiled
/// in; which of them a site runs is data, changed without a rebuild. An
/// offering without a state item is on.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.offering_state", version = 1)]
pub struct OfferingState {
    /// The offering's name.
    #[item(unique)]
    pub name: String,
    /// Whether it is served.
    pub enabled: bool,
}

/// Switches an offering on or off for the site.
pub fn set_offering_enabled(
    site: &mantissa_store::Site,
    name: &str,
    enabled: bool,
) -> mantissa_store::Result<()> {
    let n = name.to_string();
    site.store().write_blocking(move |tx| {
        match tx
            .query::<OfferingState>()
            .filter(OfferingState::name.eq(n.clone()))
            .first()?
        {
            Some(mut s) => {
                s.enabled = enabled;
                tx.update(&s)
            }
            None => tx.insert(&OfferingState { name: n, enabled }).map(drop),
        }
    })
}

/// Whether the offering called `name` is switched on for the site (a
/// [core](Offering::core) one always is).
pub async fn offering_is_enabled(app: &App, name: &str) -> Result<bool, WebError> {
    if app.offering(name).is_some_and(|o| o.core()) {
        return Ok(true);
    }
    let n = name.to_string();
    Ok(app
        .site()
        .store()
        .read(move |r| {
            r.query::<OfferingState>()
                .filter(OfferingState::name.eq(n))
                .first()
        })
        .await?
        .is_none_or(|s| s.enabled))
}

/// The signed-in owner of a `/private/…` page (a request extension).
#[derive(Clone)]
pub struct Owner {
    /// The user's name.
    pub name: String,
    /// The user's store.
    pub store: Store,
}

/// A URL under `/users/<owner>/` at which an item is published. Kept in the
/// owner's store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.published", version = 1)]
pub struct Published {
    /// The slug: `/users/<owner>/<slug>`.
    #[item(unique)]
    pub slug: String,
    /// The offering that renders it.
    pub offering: String,
    /// The item's type.
    pub item_type: String,
    /// The item's id.
    #[item(index)]
    pub item_id: i64,
    /// For a slug no longer in use: the slug it moved to.
    pub moved_to: Option<String>,
}

/// The longest slug [`slugify`] makes, in characters.
pub const SLUG_MAX: usize = 80;

/// Makes a slug of a title: lowercase ASCII letters and digits, words joined
/// by `-`, at most [`SLUG_MAX`] characters.
///
/// Letters outside ASCII are transliterated (deunicode): `é` is `e`, `ß`
/// `ss`, Cyrillic and Greek take their Latin spellings, Chinese and
/// Japanese ideographs their (Mandarin) readings, as Rails' `parameterize`
/// and the `slug` crate do. Dropping them, as before, made "Été à Paris"
/// `t-paris`, and a title in Japanese `item`. Slugs stay ASCII so that an
/// address reads the same when copied, mailed or typed, with no percent
/// escapes or look-alike letters.
///
/// ```
/// assert_eq!(mantissa_web::slugify("Hello, World! Été 2026"), "hello-world-ete-2026");
/// assert_eq!(mantissa_web::slugify("Café & Crème – ünïcode"), "cafe-creme-unicode");
/// assert_eq!(mantissa_web::slugify("!!!"), "item");
/// ```
pub fn slugify(title: &str) -> String {
    slug_words(title, SLUG_MAX).unwrap_or_else(|| "item".into())
}

/// [`slugify`] for a second item of the same title: the title's slug, cut
/// so that `-<suffix>` still fits in [`SLUG_MAX`], then the suffix (an id,
/// say). Appending the suffix first and cutting after, as before, cut the
/// suffix off a long title and gave the same slug again.
///
/// ```
/// let long = "word ".repeat(30);
/// let slug = mantissa_web::slugify_with_suffix(&long, "1234");
/// assert!(slug.ends_with("-1234") && slug.len() <= mantissa_web::SLUG_MAX, "{slug}");
/// assert_eq!(mantissa_web::slugify_with_suffix("Plans", "7"), "plans-7");
/// ```
pub fn slugify_with_suffix(title: &str, suffix: &str) -> String {
    let suffix = slug_words(suffix, SLUG_MAX / 2).unwrap_or_else(|| "1".into());
    let room = SLUG_MAX - suffix.len() - 1;
    let head = slug_words(title, room).unwrap_or_else(|| "item".into());
    format!("{head}-{suffix}")
}

/// The slug words of `text` in at most `max` characters (cut at a `-`
/// where it can be, never leaving one at the end); none if it has no
/// letters or digits.
fn slug_words(text: &str, max: usize) -> Option<String> {
    let mut slug = String::new();
    for c in deunicode::deunicode(text)
        .chars()
        .flat_map(char::to_lowercase)
    {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    if slug.len() > max {
        // ASCII only, so any index is a character boundary.
        let cut = &slug[..max];
        slug = match cut.rfind('-') {
            // Whole words, unless that would leave too little.
            Some(i) if i >= max / 2 => cut[..i].to_string(),
            _ => cut.to_string(),
        };
    }
    let slug = slug.trim_end_matches('-');
    (!slug.is_empty()).then(|| slug.to_string())
}

/// Why an offering could not be installed in a user's store: its own error,
/// of whatever type (an offering's types are its own).
pub type InstallError = Box<dyn std::error::Error + Send + Sync>;

/// Why an item could not be published at an address.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another item is published at that address (or was, and it
    /// redirects there).
    #[error("the address {slug:?} is already used by another item")]
    Taken {
        /// The address, made URL-safe.
        slug: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PublishError> for WebError {
    fn from(e: PublishError) -> WebError {
        match e {
            e @ PublishError::Taken { .. } => WebError::Conflict(e.to_string()),
            PublishError::Store(e) => e.into(),
        }
    }
}

/// Publishes `item` of `offering` at `slug` (made URL-safe with
/// [`slugify`]). If the item was published under another slug, that one now
/// redirects here. Returns the slug used.
pub fn publish<T: Item>(
    tx: &mut Write<'_>,
    offering: &str,
    item: Ref<T>,
    slug: &str,
) -> Result<String, PublishError> {
    let slug = slugify(slug);
    let current = tx
        .query::<Published>()
        .filter(Published::item_type.eq(T::NAME))
        .filter(Published::item_id.eq(item.id()))
        .filter(Published::moved_to.is_null())
        .all()?;
    if current.iter().any(|p| p.slug == slug) {
        return Ok(slug);
    }
    if let Some(taken) = tx
        .query::<Published>()
        .filter(Published::slug.eq(slug.clone()))
        .first()?
    {
        if taken.item_type != T::NAME || taken.item_id != item.id() {
            return Err(PublishError::Taken { slug });
        }
        // The item takes back one of its old slugs.
        tx.delete(taken.id())?;
    }
    for mut old in tx
        .query::<Published>()
        .filter(Published::item_type.eq(T::NAME))
        .filter(Published::item_id.eq(item.id()))
        .all()?
    {
        old.moved_to = Some(slug.clone());
        tx.update(&old)?;
    }
    tx.insert(&Published {
        slug: slug.clone(),
        offering: offering.to_string(),
        item_type: T::NAME.to_string(),
        item_id: item.id(),
        moved_to: None,
    })?;
    Ok(slug)
}

/// Requires a signed-in user for the pages of an offering under
/// `/private/<offering>/…`, and hands the handler their store (an [`Owner`]
/// extension); the response to send instead when the offering is switched
/// off or nobody is signed in. Other requests pass untouched.
pub(crate) async fn require_owner(app: &App, req: &mut Request) -> Result<(), Response> {
    let Some(offering) = req
        .uri()
        .path()
        .strip_prefix("/private/")
        .map(|rest| rest.split('/').next().unwrap_or_default())
        .filter(|name| app.offering(name).is_some())
        .map(str::to_string)
    else {
        return Ok(());
    };
    match offering_is_enabled(app, &offering).await {
        Ok(true) => {}
        Ok(false) => return Err(WebError::NotFound.into_response()),
        Err(e) => return Err(e.into_response()),
    }
    let user = req.extensions().get::<Session>().and_then(Session::user);
    let Some(name) = user else {
        if req.extensions().get::<ApiRequest>().is_some() {
            return Err(crate::api::unauthorized());
        }
        let next_url = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let target = format!("/login?next={}", urlencode(&next_url));
        return Err(Redirect::to(&target).into_response());
    };
    let site = app.site().clone();
    let n = name.clone();
    let store = match tokio::task::spawn_blocking(move || site.user_store(&n)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return Err(WebError::from(e).into_response()),
        Err(e) => return Err(WebError::Internal(e.to_string()).into_response()),
    };
    req.extensions_mut().insert(Owner { name, store });
    Ok(())
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// `POST /users/<name>/<slug>`: a form sent from a published item's page
/// (signing a guestbook), answered by its offering; [`shared_item`] does
/// the work, this documents it.
#[utoipa::path(
    post,
    path = "/users/{name}/{slug}",
    operation_id = "shared_item_form",
    tag = "site",
    params(
        ("name" = String, Path, description = "The user who published the item"),
        ("slug" = String, Path, description = "The item's address"),
    ),
    request_body(
        description = "The form on the item's page; its fields are the offering's",
        content_type = "application/x-www-form-urlencoded",
        content = std::collections::HashMap<String, String>,
    ),
    responses(
        (status = 303, description = "Done: back to the item's page, which says what happened (Location)"),
        (status = 200, description = "What the offering answers with",
            body = std::collections::HashMap<String, serde_json::Value>),
        (status = "default", description = "A problem: 405 (with Allow) for an item whose page takes no form, \
            422 for a form with a mistake, 404 for an item that does not exist or that the visitor may not see",
            body = crate::api::Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])),
)]
pub(crate) async fn shared_item_form(
    app: State<App>,
    parts: Path<Vec<(String, String)>>,
    req: Request,
) -> Result<Response, WebError> {
    shared_item(app, parts, req).await
}

#[utoipa::path(
    get,
    path = "/users/{name}/{slug}",
    operation_id = "shared_item",
    tag = "site",
    params(
        ("name" = String, Path, description = "The user who published the item"),
        ("slug" = String, Path, description = "The item's address"),
    ),
    responses(
        (status = 200, description = "The item's data, as its offering shows it",
            body = std::collections::HashMap<String, serde_json::Value>),
        (status = 301, description = "The item moved to another address (Location)"),
        (status = "default", description = "A problem: 404 for an item that does not exist or that the visitor may not see",
            body = crate::api::Problem, content_type = "application/problem+json"),
    ),
    security((), ("token" = [])),
)]
/// `/users/<name>/<slug>` and `/users/<name>/<slug>/<rest>`: a published
/// item's page, answered by its offering.
pub(crate) async fn shared_item(
    State(app): State<App>,
    Path(parts): Path<Vec<(String, String)>>,
    req: Request,
) -> Result<Response, WebError> {
    let get = |k: &str| {
        parts
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (owner, slug, rest) = (get("name"), get("slug"), get("rest"));
    if mantissa_store::check_store_name(&owner).is_err() {
        return Err(WebError::NotFound);
    }
    let site = app.site().clone();
    let o = owner.clone();
    let store = tokio::task::spawn_blocking(move || site.existing_user_store(&o))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??
        .ok_or(WebError::NotFound)?;
    let s = slug.clone();
    let found = store
        .read(move |r| r.query::<Published>().filter(Published::slug.eq(s)).first())
        .await?
        .ok_or(WebError::NotFound)?;
    // Access is decided before anything else, old slugs included: a 301
    // would tell a visitor who may not see the item that it exists.
    let visitor = req.extensions().get::<Session>().and_then(Session::user);
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or_default().to_string();
    let capabilities = app
        .access_policy()
        .capabilities(store.clone(), owner.clone(), visitor.clone(), found.clone())
        .await?;
    if !crate::access::grants(&capabilities, crate::access::VIEW) {
        return Err(WebError::NotFound);
    }
    if let Some(new) = &found.moved_to {
        let mut target = format!("/users/{owner}/{new}");
        if !rest.is_empty() {
            target.push('/');
            target.push_str(&rest);
        }
        if let Some(q) = req.uri().query() {
            target.push('?');
            target.push_str(q);
        }
        let target: Uri = target.parse().map_err(|_| WebError::NotFound)?;
        return Ok((
            axum::http::StatusCode::MOVED_PERMANENTLY,
            [(axum::http::header::LOCATION, target.to_string())],
        )
            .into_response());
    }
    let owner_name = owner.clone();
    let offering = app.offering(&found.offering).ok_or(WebError::NotFound)?;
    if !offering_is_enabled(&app, &found.offering).await? {
        return Err(WebError::NotFound);
    }
    // The pipeline has bounded the body's size and time already.
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| WebError::BadRequest(format!("The form could not be read: {e}.")))?;
    let page = offering
        .shared(
            app.clone(),
            SharedRequest {
                owner,
                store,
                item_type: found.item_type.clone(),
                item_id: found.item_id,
                rest,
                visitor,
                capabilities,
                method,
                body,
                path: format!("/users/{owner_name}/{slug}"),
                query,
            },
        )
        .await?;
    // A published item is public content: its addresses are hidden from
    // visitors who are not signed in.
    Ok(crate::page::hiding_addresses(page))
}

/// The installed offerings.
pub type Offerings = Arc<Vec<Arc<dyn Offering>>>;
