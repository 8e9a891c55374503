//! The web application: its state, and the router behind the request
//! pipeline ([`crate::pipeline`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mantissa_server::{Guard, Limits};
use mantissa_store::Site;
use minijinja::Value;

use crate::access::{AccessPolicy, PublicPolicy};
use crate::config::{AddressList, SiteConfig};
use crate::http::ClientInfo;
use crate::nav::{EveryOffering, Menu, Navigation};
use crate::observe::{RequestRate, metrics_text, prometheus};
use crate::offering::{Offering, Offerings, shared_item};
use crate::page::{ApiRequest, Page, WebError};
use crate::pipeline::WebService;
use crate::protect::{AddressLimiter, FirstSeen, bot_limiter, none_match};
use crate::reveal::Reveals;
use crate::session::TokenAuth;
use crate::statics::Statics;
use crate::templates::{TemplateSources, Templates};
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Mantissa's own templates and static files, compiled in.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("front.html", include_str!("../templates/front.html")),
    ("404.html", include_str!("../templates/404.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("reveal.html", include_str!("../templates/reveal.html")),
];
const BUILTIN_STATIC: &[(&str, &str, &[u8])] = &[(
    "mantissa",
    "mantissa.css",
    include_bytes!("../static/mantissa.css"),
)];

/// How the web application runs.
#[derive(Clone, Default)]
pub struct WebOptions {
    /// The offerings installed on the site.
    pub offerings: Vec<Arc<dyn Offering>>,
    /// Development mode: templates and theme files reload on every request,
    /// and template errors show in the page.
    pub dev: bool,
    /// Authenticates API tokens; without one, bearer tokens are refused.
    pub tokens: Option<Arc<dyn TokenAuth>>,
    /// Decides who sees published items; [`PublicPolicy`] when none.
    pub access: Option<Arc<dyn AccessPolicy>>,
    /// Extra templates (name, source) from offerings; a theme still
    /// overrides them.
    pub templates: Vec<(String, &'static str)>,
}

struct Inner {
    tokens: Option<Arc<dyn TokenAuth>>,
    offerings: Offerings,
    access: Arc<dyn AccessPolicy>,
    site: Site,
    guard: Guard,
    templates: Templates,
    statics: Arc<Statics>,
    config: RwLock<Configured>,
    dev: bool,
    bots: AddressLimiter,
    first_seen: FirstSeen,
    rate: RequestRate,
    reveals: Arc<Reveals>,
    navigation: std::sync::OnceLock<Arc<dyn Navigation>>,
    /// Path prefixes whose POSTs carry their own authority
    /// ([`App::allow_cross_site_posts`]).
    cross_site_posts: RwLock<Vec<String>>,
}

/// The site's configuration, and what templates see of it (`site`), made
/// once per change rather than per page; under one lock, so that the two
/// always agree.
struct Configured {
    config: SiteConfig,
    public: Value,
    /// `trusted_proxies`, parsed.
    proxies: AddressList,
    /// `metrics_from`, parsed.
    metrics_from: AddressList,
    /// The `Strict-Transport-Security` value, if one is sent.
    hsts: Option<HeaderValue>,
}

impl Configured {
    /// The configuration `config`, also telling `guard` which addresses are
    /// reverse proxies.
    fn new(config: SiteConfig, guard: &Guard) -> Configured {
        // `mantissa site set` checks these lists; one that does not parse
        // (written some other way) trusts no one rather than stopping the
        // site.
        let list = |name: &str, text: &str| {
            AddressList::parse(text).unwrap_or_else(|e| {
                tracing::error!(setting = name, error = %e, "ignoring a bad address list");
                AddressList::default()
            })
        };
        let proxies = list("trusted-proxies", &config.trusted_proxies);
        let trusted = proxies.clone();
        guard.trust_proxies(move |ip| trusted.contains(ip));
        Configured {
            public: Value::from_serialize(config.public()),
            proxies,
            metrics_from: list("metrics-from", &config.metrics_from),
            hsts: (config.hsts_max_age > 0).then(|| {
                HeaderValue::from_str(&format!("max-age={}", config.hsts_max_age)).expect("digits")
            }),
            config,
        }
    }
}

/// The web application's shared state. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl App {
    /// The web application of `site`, sharing the server's `guard`.
    pub fn new(site: Site, guard: Guard, options: WebOptions) -> Result<App, WebError> {
        let config = SiteConfig::load_or_init(&site)?;
        let theme = theme_dir(&site, &config);
        let mut static_files: Vec<(&str, &str, &'static [u8])> = BUILTIN_STATIC.to_vec();
        for o in &options.offerings {
            for (path, bytes) in o.static_files() {
                static_files.push((o.name(), path, bytes));
            }
        }
        let statics = Arc::new(Statics::new(
            &static_files,
            theme.as_ref().map(|t| t.join("static")),
            options.dev,
        ));
        let mut builtin: std::collections::HashMap<String, &'static str> = BUILTIN_TEMPLATES
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect();
        for (name, source) in options.templates {
            builtin.entry(name).or_insert(source);
        }
        for o in &options.offerings {
            for (name, source) in o.templates() {
                builtin.entry(name.to_string()).or_insert(source);
            }
        }
        let statics_for_templates = statics.clone();
        let reveals = Arc::new(Reveals::load_or_init(&site)?);
        let templates = Templates::new(
            TemplateSources {
                theme_dir: theme.as_ref().map(|t| t.join("templates")),
                builtin: Arc::new(builtin),
                source_dirs: options
                    .offerings
                    .iter()
                    .filter_map(|o| o.template_dir())
                    .collect(),
            },
            options.dev,
            vec![(
                "static_url",
                Value::from_function(move |offering: &str, path: &str| {
                    let url = statics_for_templates.url(offering, path);
                    // Our own URL, of plain characters: no escaping needed.
                    if url
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
                    {
                        Value::from_safe_string(url)
                    } else {
                        Value::from(url)
                    }
                }),
            )],
        )
        .hiding_addresses_with(reveals.clone());
        prometheus();
        let bots = bot_limiter(config.crawl_delay.max(1) as u64);
        let configured = Configured::new(config, &guard);
        Ok(App(Arc::new(Inner {
            tokens: options.tokens,
            offerings: Arc::new(options.offerings),
            access: options.access.unwrap_or_else(|| Arc::new(PublicPolicy)),
            bots,
            site,
            guard,
            templates,
            statics,
            config: RwLock::new(configured),
            dev: options.dev,
            first_seen: FirstSeen::default(),
            rate: RequestRate::default(),
            reveals,
            navigation: std::sync::OnceLock::new(),
            cross_site_posts: RwLock::new(Vec::new()),
        })))
    }

    /// The site.
    pub fn site(&self) -> &Site {
        &self.0.site
    }

    /// Every offering linked into this site.
    pub fn offerings(&self) -> Vec<Arc<dyn Offering>> {
        self.0.offerings.iter().cloned().collect()
    }

    /// The installed offering called `name`.
    pub fn offering(&self, name: &str) -> Option<Arc<dyn Offering>> {
        self.0.offerings.iter().find(|o| o.name() == name).cloned()
    }

    /// Installs what decides the navigation (the accounts do, when they
    /// add their routes); the first one installed stays.
    pub fn set_navigation(&self, navigation: Arc<dyn Navigation>) {
        let _ = self.0.navigation.set(navigation);
    }

    /// Lets POSTs to the paths under `prefix` (`/unsubscribe/`) through
    /// without the CSRF check: no token, no same-site check. Only for
    /// routes whose URL is itself the authority (a signed token in the
    /// path, which a forger would need) and which must take POSTs that no
    /// browser of the site's visitor sends: RFC 8058's one-click
    /// unsubscribe is POSTed by mail providers' servers, with no cookie
    /// and no token. The route must act on nothing but what its URL names.
    pub fn allow_cross_site_posts(&self, prefix: &str) {
        let mut prefixes = self
            .0
            .cross_site_posts
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !prefixes.iter().any(|p| p == prefix) {
            prefixes.push(prefix.to_string());
        }
    }

    /// Whether a POST to `path` needs no CSRF check
    /// ([`App::allow_cross_site_posts`]).
    pub(crate) fn takes_cross_site_posts(&self, path: &str) -> bool {
        self.0
            .cross_site_posts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    /// The navigation for `user` (none: a visitor).
    pub async fn menu(&self, user: Option<String>) -> Menu {
        match self.0.navigation.get() {
            Some(n) => n.menu(self.clone(), user).await,
            None => EveryOffering.menu(self.clone(), user).await,
        }
    }

    /// What the front page of a new site tells `user`, if anything.
    pub async fn first_run(&self, user: Option<String>) -> Option<crate::nav::FirstRun> {
        match self.0.navigation.get() {
            Some(n) => n.first_run(self.clone(), user).await,
            None => None,
        }
    }

    pub(crate) fn token_auth(&self) -> Option<&Arc<dyn TokenAuth>> {
        self.0.tokens.as_ref()
    }

    /// The access policy for published items.
    pub fn access_policy(&self) -> &Arc<dyn AccessPolicy> {
        &self.0.access
    }

    /// The connection guard.
    pub fn guard(&self) -> &Guard {
        &self.0.guard
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.0.guard.limits()
    }

    /// What hides e-mail addresses from visitors who are not signed in.
    pub fn reveals(&self) -> &Reveals {
        &self.0.reveals
    }

    /// The templates.
    pub fn templates(&self) -> &Templates {
        &self.0.templates
    }

    pub(crate) fn bots(&self) -> &AddressLimiter {
        &self.0.bots
    }

    pub(crate) fn request_rate(&self) -> &RequestRate {
        &self.0.rate
    }

    /// Requests served in the last minute.
    pub fn requests_last_minute(&self) -> u64 {
        self.0.rate.last_minute()
    }

    /// Requests served since the start, and how many of them were server
    /// errors (5xx), for the admin console's charts.
    pub fn requests_and_errors(&self) -> (u64, u64) {
        (self.0.rate.total(), self.0.rate.errors())
    }

    pub(crate) fn first_seen(&self) -> &FirstSeen {
        &self.0.first_seen
    }

    fn configured(&self) -> std::sync::RwLockReadGuard<'_, Configured> {
        self.0.config.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The site's configuration.
    pub fn config(&self) -> SiteConfig {
        self.configured().config.clone()
    }

    /// The reverse proxies whose forwarding headers name the client.
    pub(crate) fn trusted_proxies(&self) -> AddressList {
        self.configured().proxies.clone()
    }

    /// Whether `ip` may read `/metrics`.
    pub(crate) fn may_read_metrics(&self, ip: std::net::IpAddr) -> bool {
        self.configured().metrics_from.contains(ip)
    }

    /// The `Strict-Transport-Security` header for answers over TLS.
    pub(crate) fn hsts(&self) -> Option<HeaderValue> {
        self.configured().hsts.clone()
    }

    /// What templates see of the site's configuration: its name, tagline
    /// and contact.
    pub(crate) fn public_site(&self) -> Value {
        self.configured().public.clone()
    }

    /// Whether the app runs in development mode.
    pub fn is_dev(&self) -> bool {
        self.0.dev
    }

    /// Re-reads the site's configuration (and theme) from the store; done on
    /// every request in development mode.
    pub async fn reload_config(&self) -> Result<(), WebError> {
        let Some(c) = self
            .0
            .site
            .store()
            .read(|r| r.query::<SiteConfig>().first())
            .await?
        else {
            return Ok(());
        };
        let c = c.into_inner();
        let theme = theme_dir(&self.0.site, &c);
        self.0
            .templates
            .set_theme_dir(theme.as_ref().map(|t| t.join("templates")));
        self.0
            .statics
            .set_theme_dir(theme.as_ref().map(|t| t.join("static")));
        *self.0.config.write().unwrap_or_else(|e| e.into_inner()) =
            Configured::new(c, self.guard());
        Ok(())
    }

    /// The web service: every route, behind the request pipeline. `extra`
    /// routes (the accounts', tests') are merged in beside Mantissa's own:
    /// a plain axum `Router`, or an `OpenApiRouter` whose documented
    /// routes (`#[utoipa::path]`) join the OpenAPI document.
    pub fn router_with(&self, extra: impl Into<OpenApiRouter<App>>) -> WebService {
        // `/users/{name}/{slug}` is in the document below.
        let routes: Router<App> = Router::new()
            .route(
                "/users/{name}/{slug}/{*rest}",
                get(shared_item).post(shared_item),
            )
            .route(
                "/reveal/{token}",
                get(crate::reveal::reveal_page).post(crate::reveal::reveal),
            )
            .route("/healthz", get(healthz))
            .route("/robots.txt", get(robots))
            .route("/metrics", get(metrics_page))
            .route("/static/{offering}/{hash}/{*path}", get(static_file));
        let mut documented: OpenApiRouter<App> =
            extra.into().routes(routes!(front_page)).routes(routes!(
                crate::offering::shared_item,
                crate::offering::shared_item_form
            ));
        for o in self.0.offerings.iter() {
            let private = OpenApiRouter::from(o.private_routes()).merge(o.private_api());
            documented = documented.nest(&format!("/private/{}", o.name()), private);
        }
        let (documented, api) = documented.split_for_parts();
        let document = Bytes::from(crate::api::document(api, &self.config().name));
        let routes = routes
            .merge(documented)
            .route(
                "/openapi.json",
                get(move |req: Request| openapi_json(document.clone(), req)),
            )
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(
                self.limits().max_body_bytes,
            ))
            .with_state(self.clone());
        WebService::new(self.clone(), routes)
    }

    /// The web service with Mantissa's own routes only.
    pub fn router(&self) -> WebService {
        self.router_with(Router::new())
    }
}

fn theme_dir(site: &Site, config: &SiteConfig) -> Option<PathBuf> {
    config
        .theme
        .as_ref()
        .filter(|t| !t.is_empty() && !t.contains(['/', '\\']) && !t.starts_with('.'))
        .map(|t| site.root().join("themes").join(t))
}

/// `/api/openapi.json`: the API's OpenAPI 3.1 document (made once, when
/// the routes are). Not at `/openapi.json`: it describes `/api/` only.
async fn openapi_json(document: Bytes, req: Request) -> Response {
    if req.extensions().get::<ApiRequest>().is_none() {
        return WebError::NotFound.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document,
    )
        .into_response()
}

/// What the front page's JSON holds (more may be added beside it).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct FrontPage {
    /// The site.
    site: PublicSite,
    /// The applications people use here (those switched on).
    applications: Vec<crate::nav::MenuLink>,
    /// Whether anyone may sign up.
    signup_open: bool,
    /// On a new site, what its administrator does next.
    first_run: Option<crate::nav::FirstRun>,
}

/// The site's public settings.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PublicSite {
    /// Its name.
    name: String,
    /// One line saying what it is.
    tagline: String,
    /// How to reach whoever runs it (an address is hidden from visitors
    /// who are not signed in).
    contact: Option<String>,
}

/// The site's front page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "front_page",
    tag = "site",
    responses(
        (status = 200, description = "The site's front page", body = FrontPage),
        (status = "default", description = "A problem", body = crate::api::Problem,
            content_type = "application/problem+json"),
    )
)]
/// The front page: what the site is and what one can do there (its
/// applications, and how to get in); on a new site, what its
/// administrator does next ([`FirstRun`](crate::FirstRun)).
async fn front_page(
    State(app): State<App>,
    session: Option<axum::Extension<crate::session::Session>>,
) -> Page {
    let c = app.config();
    let user = session.and_then(|axum::Extension(s)| s.user());
    let names: Vec<String> = app
        .offerings()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let apps = crate::nav::applications(&app, &names).await;
    let first_run = app.first_run(user.clone()).await;
    let menu = app.menu(user.clone()).await;
    Page::new(
        "front.html",
        FrontPage {
            site: PublicSite {
                name: c.name,
                tagline: c.tagline,
                contact: c.contact,
            },
            applications: apps,
            signup_open: menu.signup_open,
            first_run,
        },
    )
    .hiding_addresses()
}

async fn healthz(State(app): State<App>) -> Response {
    match app
        .site()
        .store()
        .read(|r| r.query::<SiteConfig>().count())
        .await
    {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the site store cannot be read\n",
            )
                .into_response()
        }
    }
}

async fn robots(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        app.config().robots,
    )
        .into_response()
}

/// Closed unless the site's `metrics-from` setting lists the client: behind
/// a reverse proxy on the same host every visitor is a loopback peer, so
/// "from loopback" says nothing. The client is the one the trusted proxies
/// name (see `pipeline`).
async fn metrics_page(State(app): State<App>, req: Request) -> Response {
    let local = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| app.may_read_metrics(c.peer.ip()));
    match (local, prometheus()) {
        (true, Some(h)) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics_text(h),
        )
            .into_response(),
        _ => WebError::NotFound.into_response(),
    }
}

async fn static_file(
    State(app): State<App>,
    Path((offering, hash, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(file) = app.0.statics.get(&offering, &path) else {
        return WebError::NotFound.into_response();
    };
    if file.hash != hash {
        // An old or mistyped version: send the browser to the current one.
        let mut r = Redirect::temporary(&app.0.statics.url(&offering, &path)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return r;
    }
    let etag = format!("\"{}\"", file.hash);
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| none_match(v, &etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (
                    header::CACHE_CONTROL,
                    cache.to_str().unwrap_or_default().to_string(),
                ),
            ],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, file.content_type.clone()),
            (header::ETAG, etag),
            (
                header::CACHE_CONTROL,
                cache.to_str().unwrap_or_default().to_string(),
            ),
        ],
        file.bytes.clone(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    let _ = req;
    WebError::NotFound.into_response()
}
