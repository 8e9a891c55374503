//! What accounts can do, independent of HTTP: create, sign up, verify, log
//! in, reset, change a password. The web pages and the command line both
//! call these.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use mantissa_mail::{Mailer, OutgoingMail};
use mantissa_store::{Read, Ref, Site, StoreError, Stored, Timestamp, Write};
use mantissa_web::{SessionRecord, random_token};

use crate::model::{Account, EmailAddress, Product, SignupPolicy, Ticket, purpose, status};
use crate::password;
use mantissa_web::Offering;

/// How long links in mail stay valid.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Failed log-ins in a row that lock an account.
pub const LOCK_AFTER: i64 = 10;

/// Why an account operation failed. Messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Log-in failed; deliberately the same for an unknown user and a wrong
    /// password.
    #[error("wrong user name or password")]
    BadCredentials,
    /// The account cannot log in (yet).
    #[error("{0}")]
    NotActive(String),
    /// Too many attempts; try again later.
    #[error("too many attempts; please wait a minute and try again")]
    Throttled,
    /// A link was wrong, used or expired.
    #[error("this link is not valid: it was used already, has expired, or was mistyped")]
    BadLink,
    /// The input was not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// Sign-up is closed, or needs what was not given.
    #[error("{0}")]
    SignupClosed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Two-factor log-in is on: a code from the authenticator app is needed
    /// (or the one given was wrong).
    #[error("enter the 6-digit code from your authenticator app")]
    CodeNeeded,
    /// Mail could not be sent.
    #[error("the email could not be sent; please try again later")]
    Mail(#[from] mantissa_mail::MailError),
}

type Limiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The account service of one site.
pub struct Accounts {
    site: Site,
    offerings: std::sync::RwLock<Vec<Arc<dyn Offering>>>,
    mailer: Arc<dyn Mailer>,
    from: String,
    base_url: std::sync::RwLock<String>,
    per_ip: Limiter<IpAddr>,
    per_account: Limiter<String>,
}

pub(crate) use mantissa_web::hash_token;

fn normalize_email(email: &str) -> Result<String, AccountError> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
        })
        && !e.contains(char::is_whitespace)
        && !e.contains(['<', '>', '"', ',']);
    if valid {
        Ok(e)
    } else {
        Err(AccountError::Invalid(format!(
            "{:?} is not an email address",
            email.trim()
        )))
    }
}

fn check_username(name: &str) -> Result<(), AccountError> {
    mantissa_store::check_store_name(name).map_err(|e| match e {
        StoreError::BadName { reason, .. } => {
            AccountError::Invalid(format!("that user name cannot be used: {reason}"))
        }
        other => AccountError::Store(other),
    })?;
    if name.len() < 2 {
        return Err(AccountError::Invalid(
            "a user name has at least 2 characters".into(),
        ));
    }
    Ok(())
}

/// The account called `name`, or an error saying there is none.
fn account_named(r: &Read<'_>, name: &str) -> mantissa_store::Result<Stored<Account>> {
    r.query::<Account>()
        .filter(Account::username.eq(name))
        .first()?
        .ok_or_else(|| StoreError::app("no such account"))
}

/// A store error raised with [`StoreError::app`] is a message for the
/// person; anything else is the store's.
fn invalid_or_store(e: StoreError) -> AccountError {
    match e {
        StoreError::App(m) => AccountError::Invalid(m),
        e => AccountError::Store(e),
    }
}

/// For the transactions that use a link: a bad link is [`AccountError::BadLink`],
/// another refusal a message for the person, and a failing store stays a
/// store error (not disguised as a bad link).
fn link_failed(e: StoreError) -> AccountError {
    match e {
        StoreError::App(m) if m == AccountError::BadLink.to_string() => AccountError::BadLink,
        e => invalid_or_store(e),
    }
}

/// Whether `account` may log in now: not locked, and active. Checked after
/// its owner is proved (by password or passkey), so that the answer tells
/// nothing to someone who is not the owner.
pub(crate) fn may_log_in(account: &Account) -> Result<(), AccountError> {
    if account.locked {
        return Err(AccountError::NotActive(
            "this account is locked after too many failed log-ins; follow the link we emailed to unlock it".into(),
        ));
    }
    match account.status.as_str() {
        status::ACTIVE => Ok(()),
        status::UNVERIFIED => Err(AccountError::NotActive(
            "please verify your email address first: follow the link we sent you".into(),
        )),
        status::PENDING => Err(AccountError::NotActive(
            "your sign-up is waiting for an administrator's approval".into(),
        )),
        _ => Err(AccountError::NotActive("this account is suspended".into())),
    }
}

/// Creates a ticket and returns its token. Inside a transaction.
pub(crate) fn issue_ticket(
    tx: &mut Write<'_>,
    purpose: &str,
    account: Option<Ref<Account>>,
    email: Option<String>,
) -> mantissa_store::Result<String> {
    let token = random_token();
    tx.insert(&Ticket {
        token_hash: hash_token(&token),
        purpose: purpose.into(),
        account,
        email,
        expires: Timestamp::now().plus(TICKET_LIFETIME),
        used: false,
    })?;
    Ok(token)
}

/// Uses a ticket once. Inside a transaction.
fn use_ticket(
    tx: &mut Write<'_>,
    token: &str,
    purpose: &str,
) -> Result<Stored<Ticket>, AccountError> {
    let mut t = tx
        .query::<Ticket>()
        .filter(Ticket::token_hash.eq(hash_token(token)))
        .first()?
        .ok_or(AccountError::BadLink)?;
    if t.used || t.purpose != purpose || t.expires < Timestamp::now() {
        return Err(AccountError::BadLink);
    }
    t.used = true;
    tx.update(&t)?;
    Ok(t)
}

/// A failed log-in for an existing account, recorded in the background:
/// counted, and after [`LOCK_AFTER`] in a row the account is locked and its
/// owner mailed a link to unlock it.
struct Failure {
    site: Site,
    mailer: Arc<dyn Mailer>,
    from: String,
    base_url: String,
    account: Ref<Account>,
    username: String,
}

impl Failure {
    async fn record(self) -> Result<(), AccountError> {
        let id = self.account;
        let locked_now = self
            .site
            .store()
            .write(move |tx| {
                let mut a = tx.get(id)?;
                a.failed_logins += 1;
                let lock = a.failed_logins >= LOCK_AFTER && !a.locked;
                if lock {
                    a.locked = true;
                }
                tx.update(&a)?;
                if !lock {
                    return Ok(None);
                }
                let address = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(id))
                    .first()?
                    .map(|e| e.address.clone());
                match address {
                    Some(addr) => {
                        let token =
                            issue_ticket(tx, purpose::UNLOCK, Some(id), Some(addr.clone()))?;
                        Ok(Some((addr, token)))
                    }
                    None => Ok(None),
                }
            })
            .await?;
        if let Some((addr, token)) = locked_now {
            tracing::warn!(user = %self.username, "account locked after repeated failed log-ins");
            self.mailer
                .send(OutgoingMail {
                    from: self.from,
                    to: vec![addr],
                    subject: "Your account was locked".into(),
                    text: format!(
                        "Someone tried to log in to your account {} many times with a wrong password, so it was locked.\n\nTo unlock it, open:\n{}/unlock/{token}\n\nThen log in as usual, or reset your password if you have forgotten it.\n",
                        self.username, self.base_url
                    ),
                })
                .await?;
        }
        Ok(())
    }
}

fn product_of(
    site: &Site,
    linked: &[Arc<dyn Offering>],
    joined_by: &str,
) -> Result<Vec<String>, AccountError> {
    let j = joined_by.to_string();
    let chosen = site.store().read_blocking(move |r| {
        r.query::<Product>()
            .filter(Product::joined_by.eq(j))
            .first()
    })?;
    Ok(match chosen {
        Some(p) => p
            .offerings
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        None => linked.iter().map(|o| o.name().to_string()).collect(),
    })
}

/// Installs the product of `username` (if active and not done yet) into the
/// user's store, creating the store.
fn install_product(
    site: &Site,
    linked: &[Arc<dyn Offering>],
    username: &str,
) -> Result<(), AccountError> {
    let store = site.user_store(username)?;
    let name = username.to_string();
    let account = site.store().read_blocking(move |r| {
        r.query::<Account>()
            .filter(Account::username.eq(name))
            .first()
    })?;
    let Some(account) = account else {
        return Ok(());
    };
    if account.product_installed || account.status != status::ACTIVE {
        return Ok(());
    }
    let wanted = product_of(site, linked, &account.joined_by)?;
    let offerings: Vec<Arc<dyn Offering>> = linked
        .iter()
        .filter(|o| wanted.iter().any(|w| w == o.name()))
        .cloned()
        .collect();
    store.write_blocking(move |tx| {
        for o in &offerings {
            o.install(tx)?;
        }
        Ok(())
    })?;
    let id = account.id();
    site.store().write_blocking(move |tx| {
        let mut a = tx.get(id)?;
        a.product_installed = true;
        tx.update(&a)
    })?;
    tracing::info!(user = %username, product = ?wanted, "product installed");
    Ok(())
}

impl Accounts {
    /// The accounts of `site`, sending mail through `mailer` from `from`,
    /// with links under `base_url` (like `https://example.org`).
    pub fn new(
        site: Site,
        mailer: Arc<dyn Mailer>,
        from: impl Into<String>,
        base_url: impl Into<String>,
    ) -> Self {
        Accounts {
            offerings: std::sync::RwLock::new(Vec::new()),
            site,
            mailer,
            from: from.into(),
            base_url: std::sync::RwLock::new(base_url.into().trim_end_matches('/').to_string()),
            per_ip: RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(20).expect("nonzero"))
                    .allow_burst(NonZeroU32::new(20).expect("nonzero")),
            ),
            per_account: RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(5).expect("nonzero"))
                    .allow_burst(NonZeroU32::new(5).expect("nonzero")),
            ),
        }
    }

    /// Replaces the rate limits: attempts per minute from one address, and
    /// for one account (defaults: 20 and 5).
    pub fn with_rate_limits(mut self, per_ip: u32, per_account: u32) -> Self {
        let q = |n: u32| {
            let n = NonZeroU32::new(n.max(1)).expect("nonzero");
            Quota::per_minute(n).allow_burst(n)
        };
        self.per_ip = RateLimiter::keyed(q(per_ip));
        self.per_account = RateLimiter::keyed(q(per_account));
        self
    }

    /// Tells the accounts which offerings the site links (for products).
    pub fn set_offerings(&self, offerings: Vec<Arc<dyn Offering>>) {
        *self.offerings.write().unwrap_or_else(|e| e.into_inner()) = offerings;
    }

    fn linked_offerings(&self) -> Vec<Arc<dyn Offering>> {
        self.offerings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The offerings a new account that joined this way gets.
    pub fn product(&self, joined_by: &str) -> Result<Vec<String>, AccountError> {
        product_of(&self.site, &self.linked_offerings(), joined_by)
    }

    /// Chooses the product for a way of joining.
    pub fn set_product(&self, joined_by: &str, offerings: &[String]) -> Result<(), AccountError> {
        if !matches!(joined_by, "open" | "invitation" | "approval" | "created") {
            return Err(AccountError::Invalid(format!(
                "{joined_by:?} is not a way of joining"
            )));
        }
        let (j, list) = (joined_by.to_string(), serde_json::json!(offerings));
        self.site.store().write_blocking(move |tx| {
            match tx
                .query::<Product>()
                .filter(Product::joined_by.eq(j.clone()))
                .first()?
            {
                Some(mut p) => {
                    p.offerings = list;
                    tx.update(&p)
                }
                None => tx
                    .insert(&Product {
                        joined_by: j,
                        offerings: list,
                    })
                    .map(drop),
            }
        })?;
        Ok(())
    }

    /// Installs an active account's product in its store, once.
    pub fn ensure_product(&self, username: &str) -> Result<(), AccountError> {
        install_product(&self.site, &self.linked_offerings(), username)
    }

    /// [`Accounts::ensure_product`], off the async threads.
    pub(crate) async fn install_later(&self, username: &str) -> Result<(), AccountError> {
        let (site, offerings, name) = (
            self.site.clone(),
            self.linked_offerings(),
            username.to_string(),
        );
        tokio::task::spawn_blocking(move || install_product(&site, &offerings, &name))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?
    }

    /// The site.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// Where links in mail point.
    pub fn base_url(&self) -> String {
        self.base_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes where links in mail point (once the server knows its address).
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.write().unwrap_or_else(|e| e.into_inner()) =
            url.trim_end_matches('/').to_string();
    }

    /// Counts an attempt from `ip` and for `account` against the rate
    /// limits; [`AccountError::Throttled`] once either is used up.
    pub(crate) fn throttle(
        &self,
        ip: Option<IpAddr>,
        account: Option<&str>,
    ) -> Result<(), AccountError> {
        if let Some(ip) = ip
            && self.per_ip.check_key(&ip).is_err()
        {
            return Err(AccountError::Throttled);
        }
        if let Some(a) = account
            && self.per_account.check_key(&a.to_lowercase()).is_err()
        {
            return Err(AccountError::Throttled);
        }
        Ok(())
    }

    async fn mail(&self, to: &str, subject: &str, text: String) -> Result<(), AccountError> {
        self.mailer
            .send(OutgoingMail {
                from: self.from.clone(),
                to: vec![to.to_string()],
                subject: subject.to_string(),
                text,
            })
            .await?;
        Ok(())
    }

    /// Creates an active account (command line, admin console). Without a
    /// password, returns a one-time link for setting one.
    pub fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password: Option<&str>,
        admin: bool,
    ) -> Result<Option<String>, AccountError> {
        check_username(username)?;
        let email = email.map(normalize_email).transpose()?;
        if let Some(p) = password {
            password::check_new(p).map_err(|e| AccountError::Invalid(format!("password: {e}")))?;
        }
        let hash = password.map(password::hash);
        let name = username.to_string();
        let token = self.site.store().write_blocking(move |tx| {
            if tx
                .query::<Account>()
                .filter(Account::username.eq(name.clone()))
                .count()?
                > 0
            {
                return Err(StoreError::app(format!(
                    "there is already a user called {name:?}"
                )));
            }
            let no_password = hash.is_none();
            let account = tx.insert(&Account {
                username: name,
                status: status::ACTIVE.into(),
                password_hash: hash,
                admin,
                created: Timestamp::now(),
                failed_logins: 0,
                locked: false,
                totp_secret: None,
                totp_enabled: false,
                totp_last_step: 0,
                joined_by: "created".into(),
                product_installed: false,
            })?;
            if let Some(address) = email.clone() {
                if tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(address.clone()))
                    .count()?
                    > 0
                {
                    return Err(StoreError::app(format!(
                        "{address} belongs to another account"
                    )));
                }
                tx.insert(&EmailAddress {
                    address,
                    account,
                    verified: true,
                })?;
            }
            if no_password {
                return issue_ticket(tx, purpose::PASSWORD, Some(account), email).map(Some);
            }
            Ok(None)
        })?;
        self.site.user_store(username)?;
        self.ensure_product(username)?;
        Ok(token.map(|t| format!("{}/reset/{t}", self.base_url())))
    }

    /// A one-time link to set the administrator's password, if the site
    /// has no administrator with a password yet (creating the `admin`
    /// account on first use).
    pub fn admin_setup_link(&self) -> Result<Option<String>, AccountError> {
        let existing = self
            .site
            .store()
            .read_blocking(|r| r.query::<Account>().filter(Account::admin.eq(true)).all())?;
        if existing.iter().any(|a| a.password_hash.is_some()) {
            return Ok(None);
        }
        match existing.into_iter().next() {
            None => self.create_user("admin", None, None, true),
            Some(admin) => {
                let id = admin.id();
                let token = self.site.store().write_blocking(move |tx| {
                    issue_ticket(tx, purpose::PASSWORD, Some(id), None)
                })?;
                Ok(Some(format!("{}/reset/{token}", self.base_url())))
            }
        }
    }

    /// Checks a user name (or email address) and password; returns the user
    /// name. Takes about as long whether or not the account exists.
    pub async fn login(
        &self,
        ip: Option<IpAddr>,
        who: &str,
        password: &str,
    ) -> Result<String, AccountError> {
        self.login_with_code(ip, who, password, None).await
    }

    /// [`Accounts::login`], with the two-factor code if the account has
    /// two-factor log-in on.
    pub async fn login_with_code(
        &self,
        ip: Option<IpAddr>,
        who: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<String, AccountError> {
        self.throttle(ip, Some(who))?;
        let key = who.trim().to_lowercase();
        let found = self
            .site
            .store()
            .read(move |r| {
                let by_email = r
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(key.clone()))
                    .first()?;
                match by_email {
                    Some(e) => r.find(e.account),
                    None => r
                        .query::<Account>()
                        .filter(Account::username.eq(key))
                        .first(),
                }
            })
            .await?;
        let pw = password.to_string();
        let Some(account) = found else {
            tokio::task::spawn_blocking(move || password::verify_dummy(&pw))
                .await
                .map_err(|e| AccountError::Invalid(e.to_string()))?;
            return Err(AccountError::BadCredentials);
        };
        let hash = account.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => password::verify(&pw, &h),
            None => {
                password::verify_dummy(&pw);
                false
            }
        })
        .await
        .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let id = account.id();
        if !ok {
            // Counted after answering: a failure for an account that exists
            // must cost the same time as one for a name that does not.
            let failure = Failure {
                site: self.site.clone(),
                mailer: self.mailer.clone(),
                from: self.from.clone(),
                base_url: self.base_url(),
                account: id,
                username: account.username.clone(),
            };
            tokio::spawn(async move {
                if let Err(e) = failure.record().await {
                    tracing::error!(error = %e, "recording a failed log-in failed");
                }
            });
            return Err(AccountError::BadCredentials);
        }
        may_log_in(&account)?;
        if account.totp_enabled {
            let secret = account.totp_secret.clone().unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let step = code
                .filter(|c| !c.trim().is_empty())
                .and_then(|c| crate::totp::check(&secret, c, now))
                .filter(|s| *s > account.totp_last_step)
                .ok_or(AccountError::CodeNeeded)?;
            self.site
                .store()
                .write(move |tx| {
                    let mut a = tx.get(id)?;
                    a.totp_last_step = step;
                    tx.update(&a)
                })
                .await?;
        }
        self.logged_in(&account).await?;
        Ok(account.username.clone())
    }

    /// What every successful log-in does, whatever proved it: the product
    /// is installed (once) and the count of failed log-ins starts again.
    pub(crate) async fn logged_in(&self, account: &Stored<Account>) -> Result<(), AccountError> {
        self.install_later(&account.username).await?;
        if account.failed_logins > 0 {
            let id = account.id();
            self.site
                .store()
                .write(move |tx| {
                    let mut a = tx.get(id)?;
                    a.failed_logins = 0;
                    tx.update(&a)
                })
                .await?;
        }
        Ok(())
    }

    /// The site's sign-up mechanism.
    pub async fn signup_mechanism(&self) -> Result<String, AccountError> {
        Ok(self
            .site
            .store()
            .read(|r| r.query::<SignupPolicy>().first())
            .await?
            .map(|p| p.mechanism.clone())
            .unwrap_or_else(|| "closed".into()))
    }

    /// Sets the sign-up mechanism: open, invitation, approval or closed.
    pub fn set_signup_mechanism(&self, mechanism: &str) -> Result<(), AccountError> {
        if !matches!(mechanism, "open" | "invitation" | "approval" | "closed") {
            return Err(AccountError::Invalid(format!(
                "{mechanism:?} is not a sign-up mechanism; use open, invitation, approval or closed"
            )));
        }
        let m = mechanism.to_string();
        self.site
            .store()
            .write_blocking(move |tx| tx.put_only(SignupPolicy { mechanism: m }).map(drop))?;
        Ok(())
    }

    /// Signs up a new account and emails a verification link. The account
    /// works only once the address is verified (and, under `approval`, the
    /// sign-up approved).
    pub async fn signup(
        &self,
        ip: Option<IpAddr>,
        username: &str,
        email: &str,
        password: &str,
        invitation: Option<&str>,
    ) -> Result<(), AccountError> {
        self.throttle(ip, None)?;
        let mechanism = self.signup_mechanism().await?;
        match (mechanism.as_str(), invitation) {
            ("open", _) | ("approval", _) | ("invitation", Some(_)) => {}
            ("invitation", None) => {
                return Err(AccountError::SignupClosed(
                    "sign-up on this site is by invitation only".into(),
                ));
            }
            _ => {
                return Err(AccountError::SignupClosed(
                    "sign-up on this site is closed".into(),
                ));
            }
        }
        check_username(username)?;
        let address = normalize_email(email)?;
        password::check_new(password)
            .map_err(|e| AccountError::Invalid(format!("password: {e}")))?;
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let (name, addr, invite) = (
            username.to_string(),
            address.clone(),
            invitation.map(str::to_string),
        );
        let approval = mechanism == "approval";
        let joined_by = mechanism.clone();
        let token = self
            .site
            .store()
            .write(move |tx| {
                if let Some(invite) = &invite {
                    use_ticket(tx, invite, purpose::INVITE)
                        .map_err(|e| StoreError::app(e.to_string()))?;
                }
                if tx
                    .query::<Account>()
                    .filter(Account::username.eq(name.clone()))
                    .count()?
                    > 0
                {
                    return Err(StoreError::app(
                        "that user name is taken; please choose another",
                    ));
                }
                if tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(addr.clone()))
                    .count()?
                    > 0
                {
                    // The same answer as success would leak that the address
                    // has an account; this only says it cannot be used.
                    return Err(StoreError::app(
                        "that email address cannot be used; log in, or reset your password",
                    ));
                }
                let account = tx.insert(&Account {
                    username: name,
                    status: if approval {
                        status::PENDING
                    } else {
                        status::UNVERIFIED
                    }
                    .into(),
                    password_hash: Some(hash),
                    admin: false,
                    created: Timestamp::now(),
                    failed_logins: 0,
                    locked: false,
                    totp_secret: None,
                    totp_enabled: false,
                    totp_last_step: 0,
                    joined_by: joined_by.clone(),
                    product_installed: false,
                })?;
                tx.insert(&EmailAddress {
                    address: addr.clone(),
                    account,
                    verified: false,
                })?;
                issue_ticket(tx, purpose::VERIFY, Some(account), Some(addr))
            })
            .await
            .map_err(invalid_or_store)?;
        self.mail(
            &address,
            "Please verify your email address",
            format!(
                "Welcome, {username}!\n\nTo verify your email address and activate your account, open:\n{}/verify/{token}\n\nThe link works once, for 24 hours. If you did not sign up, ignore this message.\n",
                self.base_url()
            ),
        )
        .await
    }

    /// Verifies an email address from its link; returns the user name.
    pub async fn verify(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        let name = self
            .site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::VERIFY)
                    .map_err(|e| StoreError::app(e.to_string()))?;
                let (Some(account), Some(address)) = (t.account, t.email.clone()) else {
                    return Err(StoreError::app(AccountError::BadLink.to_string()));
                };
                let mut a = tx.get(account)?;
                if let Some(mut e) = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(address))
                    .first()?
                {
                    e.verified = true;
                    tx.update(&e)?;
                }
                if a.status == status::UNVERIFIED {
                    a.status = status::ACTIVE.into();
                    tx.update(&a)?;
                }
                Ok(a.username.clone())
            })
            .await
            .map_err(link_failed)?;
        self.install_later(&name).await?;
        Ok(name)
    }

    /// Emails a password-reset link if an account has this address. Says
    /// nothing either way, and takes about as long.
    pub async fn request_reset(&self, ip: Option<IpAddr>, email: &str) -> Result<(), AccountError> {
        self.throttle(ip, Some(email))?;
        let Ok(address) = normalize_email(email) else {
            return Ok(());
        };
        let addr = address.clone();
        let token = self
            .site
            .store()
            .write(move |tx| {
                let Some(e) = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(addr.clone()))
                    .first()?
                else {
                    return Ok(None);
                };
                let account = tx.get(e.account)?;
                issue_ticket(tx, purpose::PASSWORD, Some(e.account), Some(addr))
                    .map(|t| Some((t, account.username.clone())))
            })
            .await?;
        if let Some((token, username)) = token {
            self.mail(
                &address,
                "Resetting your password",
                format!(
                    "To choose a new password for {username}, open:\n{}/reset/{token}\n\nThe link works once, for 24 hours. If you did not ask for this, ignore this message: your password has not changed.\n",
                    self.base_url()
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Whether a password link is still good (to show its form).
    pub async fn password_link_valid(&self, token: &str) -> Result<bool, AccountError> {
        let hash = hash_token(token);
        let t = self
            .site
            .store()
            .read(move |r| {
                r.query::<Ticket>()
                    .filter(Ticket::token_hash.eq(hash))
                    .first()
            })
            .await?;
        Ok(t.is_some_and(|t| {
            !t.used && t.purpose == purpose::PASSWORD && t.expires >= Timestamp::now()
        }))
    }

    /// Sets a new password from a link; ends every session of the account
    /// and unlocks it. Returns the user name.
    pub async fn reset(&self, token: &str, new_password: &str) -> Result<String, AccountError> {
        password::check_new(new_password)
            .map_err(|e| AccountError::Invalid(format!("password: {e}")))?;
        let pw = new_password.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let token = token.to_string();
        self.site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::PASSWORD)
                    .map_err(|e| StoreError::app(e.to_string()))?;
                let account = t
                    .account
                    .ok_or_else(|| StoreError::app(AccountError::BadLink.to_string()))?;
                let mut a = tx.get(account)?;
                a.password_hash = Some(hash);
                a.locked = false;
                a.failed_logins = 0;
                if a.status == status::UNVERIFIED && t.email.is_some() {
                    // The link reached this address: it is verified.
                    a.status = status::ACTIVE.into();
                }
                tx.update(&a)?;
                tx.delete_where(SessionRecord::user.eq(a.username.clone()))?;
                Ok(a.username.clone())
            })
            .await
            .map_err(link_failed)
    }

    /// Unlocks an account from the emailed link.
    pub async fn unlock(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        self.site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::UNLOCK)
                    .map_err(|e| StoreError::app(e.to_string()))?;
                let account = t.account.ok_or_else(|| StoreError::app("no account"))?;
                let mut a = tx.get(account)?;
                a.locked = false;
                a.failed_logins = 0;
                tx.update(&a)?;
                Ok(a.username.clone())
            })
            .await
            .map_err(link_failed)
    }

    /// Changes a signed-in user's password, given the current one; ends
    /// their other sessions.
    pub async fn change_password(
        &self,
        username: &str,
        current: &str,
        new: &str,
        keep_session: Option<String>,
    ) -> Result<(), AccountError> {
        self.login(None, username, current).await?;
        password::check_new(new)
            .map_err(|e| AccountError::Invalid(format!("new password: {e}")))?;
        let pw = new.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let name = username.to_string();
        self.site
            .store()
            .write(move |tx| {
                let mut a = tx
                    .query::<Account>()
                    .filter(Account::username.eq(name.clone()))
                    .first()?
                    .ok_or_else(|| StoreError::app("no such account"))?;
                a.password_hash = Some(hash);
                tx.update(&a)?;
                let mut others = SessionRecord::user.eq(name);
                if let Some(keep) = keep_session {
                    others = others.and(SessionRecord::token_hash.ne(keep));
                }
                tx.delete_where(others)?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Deletes an account and its store, after exporting the store to
    /// `<site>/exports/<name>-<time>.sqlite`; returns the export's path.
    pub fn delete_user(&self, username: &str) -> Result<std::path::PathBuf, AccountError> {
        let dir = self.site.root().join("exports");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let export = dir.join(format!(
            "{username}-{}.sqlite",
            Timestamp::now().as_micros()
        ));
        if self.site.has_user_store(username)? {
            self.site.export_user(username, &export)?;
        }
        let name = username.to_string();
        let id = self.site.store().write_blocking(move |tx| {
            let id = tx
                .query::<Account>()
                .filter(Account::username.eq(name.clone()))
                .ids()?;
            tx.delete_where(SessionRecord::user.eq(name.clone()))?;
            tx.delete_where(Account::username.eq(name))?;
            Ok(id.first().copied())
        })?;
        // What other users granted to this account goes with it (shares
        // and group memberships name the account's id, never reused, so a
        // new account with the same name does not inherit them anyway).
        if let Some(id) = id {
            crate::sharing::revoke_grants(&self.site, id.into())?;
        }
        if self.site.has_user_store(username)? {
            self.site.delete_user_store(username)?;
        }
        tracing::warn!(user = %username, export = %export.display(), "account deleted");
        Ok(export)
    }

    /// Asks to move `username` to a new email address: checks the password
    /// and mails a link to the new address; the change happens when it is
    /// followed.
    pub async fn request_email_change(
        &self,
        username: &str,
        password: &str,
        new_email: &str,
    ) -> Result<(), AccountError> {
        self.login(None, username, password).await?;
        let address = normalize_email(new_email)?;
        let (name, addr) = (username.to_string(), address.clone());
        let token = self
            .site
            .store()
            .write(move |tx| {
                if tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(addr.clone()))
                    .count()?
                    > 0
                {
                    return Err(StoreError::app("that email address cannot be used"));
                }
                let a = account_named(tx, &name)?;
                issue_ticket(tx, purpose::CHANGE_EMAIL, Some(a.id()), Some(addr))
            })
            .await
            .map_err(invalid_or_store)?;
        self.mail(
            &address,
            "Please confirm your new email address",
            format!(
                "To use this address for your account {username}, open:\n{}/email/{token}\n\nThe link works once, for 24 hours. Until then your old address stays in use.\n",
                self.base_url()
            ),
        )
        .await
    }

    /// Completes an email change from its link; returns the new address.
    pub async fn confirm_email_change(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        self.site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::CHANGE_EMAIL)
                    .map_err(|e| StoreError::app(e.to_string()))?;
                let (Some(account), Some(address)) = (t.account, t.email.clone()) else {
                    return Err(StoreError::app(AccountError::BadLink.to_string()));
                };
                if tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(address.clone()))
                    .count()?
                    > 0
                {
                    return Err(StoreError::app("that email address was taken meanwhile"));
                }
                tx.delete_where(EmailAddress::account.eq(account))?;
                tx.insert(&EmailAddress {
                    address: address.clone(),
                    account,
                    verified: true,
                })?;
                Ok(address)
            })
            .await
            .map_err(link_failed)
    }

    /// Starts two-factor set-up: a new secret for `username`, not yet in
    /// force. Returns the secret and the `otpauth://` URL.
    pub async fn totp_begin(&self, username: &str) -> Result<(String, String), AccountError> {
        let secret = crate::totp::new_secret();
        let issuer = "Mantissa".to_string();
        let url = crate::totp::url(&secret, username, &issuer)
            .ok_or_else(|| AccountError::Invalid("cannot make a two-factor secret".into()))?;
        let (name, s) = (username.to_string(), secret.clone());
        self.site
            .store()
            .write(move |tx| {
                let mut a = account_named(tx, &name)?;
                if a.totp_enabled {
                    return Err(StoreError::app("two-factor log-in is already on"));
                }
                a.totp_secret = Some(s);
                tx.update(&a)
            })
            .await
            .map_err(invalid_or_store)?;
        Ok((secret, url))
    }

    /// Turns two-factor log-in on or off, given a current code.
    pub async fn totp_set(&self, username: &str, code: &str, on: bool) -> Result<(), AccountError> {
        let name = username.to_string();
        let code = code.to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.site
            .store()
            .write(move |tx| {
                let mut a = account_named(tx, &name)?;
                let secret = a.totp_secret.clone().unwrap_or_default();
                let step = crate::totp::check(&secret, &code, now)
                    .filter(|s| *s > a.totp_last_step)
                    .ok_or_else(|| {
                        StoreError::app("that code is not right; try the current one")
                    })?;
                a.totp_enabled = on;
                a.totp_last_step = step;
                if !on {
                    a.totp_secret = None;
                }
                tx.update(&a)
            })
            .await
            .map_err(invalid_or_store)
    }

    /// Whether `username` has two-factor log-in on.
    pub async fn totp_enabled(&self, username: &str) -> Result<bool, AccountError> {
        let name = username.to_string();
        Ok(self
            .site
            .store()
            .read(move |r| {
                r.query::<Account>()
                    .filter(Account::username.eq(name))
                    .first()
            })
            .await?
            .is_some_and(|a| a.totp_enabled))
    }

    /// An invitation link (for sites whose sign-up is by invitation).
    pub fn invite(&self) -> Result<String, AccountError> {
        let token = self
            .site
            .store()
            .write_blocking(|tx| issue_ticket(tx, purpose::INVITE, None, None))?;
        Ok(format!("{}/signup?invitation={token}", self.base_url()))
    }
}
