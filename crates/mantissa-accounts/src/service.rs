//! What accounts can do, independent of HTTP: create, sign up, verify, log
//! in, reset, change a password. The web pages and the command line both
//! call these.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use mantissa_mail::Mailer;
use mantissa_store::{Read, Ref, Site, StoreError, Stored, Timestamp, Write};
use mantissa_web::{SessionRecord, random_token};

use crate::backoff::{Backoff, Rules};
use crate::model::{Account, EmailAddress, Product, SignupPolicy, Ticket, purpose, status};
use crate::password;
use mantissa_web::Offering;

/// Log-in attempts (right or wrong) one address may make in a minute, for
/// any accounts.
pub const ATTEMPTS_PER_MINUTE_PER_ADDRESS: u32 = 60;

/// Log-in attempts (right or wrong) one address may make in a minute at one
/// account, however its name is written.
pub const ATTEMPTS_PER_MINUTE_PER_ACCOUNT: u32 = 10;

/// How long links in mail stay valid.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Failed log-ins of one account that cost no wait; after them each
/// failure doubles the wait (in memory, per account). The account is never
/// locked by failures: a lock is something any stranger can cause.
pub const LOCK_AFTER: i64 = 10;
/// The longest a submitted user name or email address may be (an email
/// address's limit, RFC 5321); longer ones are refused before anything
/// else, so they are never kept or hashed.
pub const MAX_WHO_LEN: usize = 254;
/// The longest password accepted at log-in (Argon2 hashes anything, but
/// megabytes of it are work for nothing).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Password-reset mails one account gets at most per hour, whoever asks.
pub const RESETS_PER_HOUR: u64 = 3;

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
    /// Too many failures in a row: the next try must wait.
    #[error("too many failed attempts; please wait {seconds} seconds and try again")]
    Wait {
        /// Seconds left to wait.
        seconds: u64,
    },
    /// A field was longer than anything it could hold.
    #[error("the {what} is too long (at most {max} characters)")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A link was wrong, used or expired.
    #[error("this link is not valid: it was used already, has expired, or was mistyped")]
    BadLink,
    /// The input was not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// Sign-up is closed, or needs what was not given.
    #[error("{0}")]
    SignupClosed(String),
    /// Another account has this user name.
    #[error("the user name {0} is taken; please choose another")]
    Taken(String),
    /// Another account has this email address (said only to
    /// administrators: sign-up does not tell who has an account).
    #[error("{0} belongs to another account")]
    AddressTaken(String),
    /// An offering of the account's product could not be installed in its
    /// store (nothing of the product was).
    #[error("installing {offering} failed: {reason}")]
    Install {
        /// The offering.
        offering: &'static str,
        /// What it said.
        reason: String,
    },
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

impl AccountError {
    /// The error as a sentence, to show a person: capital first, full stop
    /// last.
    pub fn sentence(&self) -> String {
        let text = self.to_string();
        let mut chars = text.chars();
        let mut s: String = match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => return text,
        };
        if !s.ends_with(['.', '!', '?']) {
            s.push('.');
        }
        s
    }

    /// Whether the person should slow down (answered with 429).
    pub fn is_throttled(&self) -> bool {
        matches!(self, AccountError::Throttled | AccountError::Wait { .. })
    }
}

type Limiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// What the limits of one account are keyed by: the account once it is
/// resolved (so `dave`, ` dave` and `DAVE@example.org` are one account),
/// else a hash of the trimmed, lowercased name (so unknown names are
/// limited alike, and no key is longer than 32 bytes whatever was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Account(i64),
    Name([u8; 32]),
}

impl Key {
    pub(crate) fn of(account: Ref<Account>) -> Key {
        Key::Account(account.id())
    }

    pub(crate) fn name(who: &str) -> Key {
        use sha2::{Digest, Sha256};
        Key::Name(Sha256::digest(who.trim().to_lowercase().as_bytes()).into())
    }
}

/// How often the limiters drop the keys they no longer need.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The first run's way in for the administrator: see
/// [`Accounts::admin_setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSetup {
    /// The administrator's user name.
    pub username: String,
    /// The one-time link that sets their password.
    pub link: String,
}

/// The account service of one site.
pub struct Accounts {
    site: Site,
    offerings: std::sync::RwLock<Vec<Arc<dyn Offering>>>,
    mailer: Arc<dyn Mailer>,
    from: String,
    base_url: std::sync::RwLock<String>,
    /// Attempts per minute from one address.
    per_ip: Limiter<IpAddr>,
    /// Attempts per minute for one account from one address.
    per_account: Limiter<(Key, Option<IpAddr>)>,
    /// Failed passwords per account, from anywhere.
    account_failures: Backoff<Key>,
    /// Failed passwords per address, for any account.
    address_failures: Backoff<IpAddr>,
    /// Wrong second-factor codes per account (only someone who knows the
    /// password gets that far, so these rules are stricter).
    code_failures: Backoff<Key>,
    /// When the limiters were last pruned (seconds since `started`).
    last_prune: AtomicU64,
    started: Instant,
    /// Sign-ups and failed log-ins, for the admin console's charts.
    pub(crate) activity: crate::activity::Counters,
}

pub(crate) use mantissa_web::hash_token;

/// A back-off's wait, for the person.
fn wait(d: Duration) -> AccountError {
    AccountError::Wait {
        seconds: d.as_secs().max(1),
    }
}

/// Whether `s` has more than `max` characters, without counting them when
/// its bytes say so already (no character is longer than 4 bytes).
pub(crate) fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && (s.len() > 4 * max || s.chars().count() > max)
}

/// Refuses a submitted name or address that no account could have, before
/// anything is done with it.
pub(crate) fn check_who_len(who: &str) -> Result<(), AccountError> {
    if longer_than(who, MAX_WHO_LEN) {
        return Err(AccountError::TooLong {
            what: "user name or email address",
            max: MAX_WHO_LEN,
        });
    }
    Ok(())
}

pub(crate) fn normalize_email(email: &str) -> Result<String, AccountError> {
    // Before anything that copies it, or says it back.
    if longer_than(email, MAX_WHO_LEN) {
        return Err(AccountError::TooLong {
            what: "email address",
            max: MAX_WHO_LEN,
        });
    }
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

/// Inserts an active account made by an administrator (`joined_by`
/// "created"), with its email address verified, refusing a user name or an
/// address that another account has. `product_installed` says whether its
/// store already holds what new accounts get (an imported store).
pub(crate) fn insert_created_account(
    tx: &mut Write<'_>,
    name: String,
    email: Option<String>,
    password_hash: Option<String>,
    admin: bool,
    product_installed: bool,
) -> Result<Ref<Account>, AccountError> {
    if username_taken(tx, &name)? {
        return Err(AccountError::Taken(name));
    }
    let account = tx.insert(&Account {
        username: name,
        status: status::ACTIVE.into(),
        password_hash,
        admin,
        created: Timestamp::now(),
        failed_logins: 0,
        locked: false,
        totp_secret: None,
        totp_enabled: false,
        totp_last_step: 0,
        joined_by: "created".into(),
        product_installed,
    })?;
    if let Some(address) = email {
        if address_taken(tx, &address)? {
            return Err(AccountError::AddressTaken(address));
        }
        tx.insert(&EmailAddress {
            address,
            account,
            verified: true,
        })?;
    }
    Ok(account)
}

/// Whether an account is called `name`.
pub(crate) fn username_taken(r: &Read<'_>, name: &str) -> mantissa_store::Result<bool> {
    Ok(r.query::<Account>()
        .filter(Account::username.eq(name.to_string()))
        .count()?
        > 0)
}

/// Whether an account has the address `address`.
fn address_taken(r: &Read<'_>, address: &str) -> mantissa_store::Result<bool> {
    Ok(r.query::<EmailAddress>()
        .filter(EmailAddress::address.eq(address.to_string()))
        .count()?
        > 0)
}

pub(crate) fn check_username(name: &str) -> Result<(), AccountError> {
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
    // A user name is also the person's address at the site's domain.
    if mantissa_mail::inbound::RESERVED_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(AccountError::Invalid(format!(
            "that user name cannot be used: {name}@ is kept for the site's own mail"
        )));
    }
    Ok(())
}

/// The account called `name`, or an error saying there is none.
fn account_named(r: &Read<'_>, name: &str) -> Result<Stored<Account>, AccountError> {
    r.query::<Account>()
        .filter(Account::username.eq(name))
        .first()?
        .ok_or_else(|| AccountError::Invalid("no such account".into()))
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

/// The kinds of link that act for an account's owner: once the password
/// changes (or one of them is used), every other one still outstanding
/// must die, or a link left in an old mailbox (or a start-up log) keeps
/// working for a day.
const OWNER_LINKS: [&str; 3] = [purpose::PASSWORD, purpose::CHANGE_EMAIL, purpose::UNLOCK];

/// Ends every outstanding owner link of `account`. Inside a transaction.
pub(crate) fn end_links(tx: &mut Write<'_>, account: Ref<Account>) -> mantissa_store::Result<()> {
    let open = tx
        .query::<Ticket>()
        .filter(Ticket::account.eq(account))
        .filter(Ticket::used.eq(false))
        .filter(Ticket::purpose.is_in(OWNER_LINKS))
        .all()?;
    for mut t in open {
        t.used = true;
        tx.update(&t)?;
    }
    Ok(())
}

/// Why a password link is mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Someone asked for a reset.
    Reset,
    /// Someone signed up with an address that has an account already: its
    /// owner gets a link instead of the sign-up, in case it was them.
    SignUpAgain,
}

/// The background half of [`Accounts::request_reset`] (and of a sign-up
/// with a known address): a password link for the account of `address`,
/// if it has one and has not had [`RESETS_PER_HOUR`] this hour.
async fn send_reset(
    site: Site,
    mailer: Arc<dyn Mailer>,
    from: String,
    base_url: String,
    address: String,
    why: Why,
) -> Result<(), AccountError> {
    let addr = address.clone();
    let token = site
        .store()
        .write(move |tx| {
            let Some(e) = tx
                .query::<EmailAddress>()
                .filter(EmailAddress::address.eq(addr.clone()))
                .first()?
            else {
                return Ok(None);
            };
            // Tickets expire a fixed time after they are made: those
            // expiring more than a day less an hour from now were made in
            // the last hour.
            let an_hour_ago = Timestamp::now().plus(TICKET_LIFETIME - Duration::from_secs(3600));
            let recent = tx
                .query::<Ticket>()
                .filter(Ticket::account.eq(e.account))
                .filter(Ticket::purpose.eq(purpose::PASSWORD))
                .filter(Ticket::expires.gt(an_hour_ago))
                .count()?;
            let account = tx.get(e.account)?;
            if recent >= RESETS_PER_HOUR {
                tracing::warn!(user = %account.username, "reset link not sent: enough were sent this hour");
                return Ok(None);
            }
            issue_ticket(tx, purpose::PASSWORD, Some(e.account), Some(addr))
                .map(|t| Some((t, account.username.clone())))
        })
        .await?;
    let Some((token, username)) = token else {
        return Ok(());
    };
    let template = match why {
        Why::Reset => "mail/reset.txt",
        Why::SignUpAgain => "mail/signup_again.txt",
    };
    let link = format!("{base_url}/reset/{token}");
    crate::mail::send(
        &site,
        &base_url,
        mailer.as_ref(),
        &from,
        &address,
        template,
        serde_json::json!({ "username": username, "link": link }),
    )
    .await?;
    Ok(())
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
        Some(p) => p.offering_names(),
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
    store.write_blocking(move |tx| -> Result<_, AccountError> {
        for o in &offerings {
            o.install(tx).map_err(|e| AccountError::Install {
                offering: o.name(),
                reason: e.to_string(),
            })?;
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
            // Attempts, not failures (those have the back-offs below): a
            // person who signs in on a phone, a laptop and a tablet in one
            // minute, or an office behind one address, is not held back.
            per_ip: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(ATTEMPTS_PER_MINUTE_PER_ADDRESS).expect("nonzero"),
            )),
            per_account: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(ATTEMPTS_PER_MINUTE_PER_ACCOUNT).expect("nonzero"),
            )),
            // Ten free, then 1 s doubling to 5 minutes: a stranger can slow
            // an owner down, never shut them out, and 100 addresses get
            // about 300 guesses a day at one account.
            account_failures: Backoff::new(Rules {
                free: LOCK_AFTER as u32,
                first: Duration::from_secs(1),
                longest: Duration::from_secs(300),
                forget_after: Duration::from_secs(3600),
            }),
            address_failures: Backoff::new(Rules {
                free: 20,
                first: Duration::from_secs(1),
                longest: Duration::from_secs(900),
                forget_after: Duration::from_secs(3600),
            }),
            // Five wrong codes, then 30 s doubling to an hour: six digits
            // fall to a few hundred thousand guesses, which this makes take
            // years.
            code_failures: Backoff::new(Rules {
                free: 5,
                first: Duration::from_secs(30),
                longest: Duration::from_secs(3600),
                forget_after: Duration::from_secs(24 * 3600),
            }),
            last_prune: AtomicU64::new(0),
            started: Instant::now(),
            activity: Default::default(),
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

    /// The folder mail is written to instead of being sent, when the site
    /// has no relay (development): none when mail goes out.
    pub fn mail_outbox(&self) -> Option<&std::path::Path> {
        self.mailer.outbox_dir()
    }

    /// The address mail is sent from.
    pub fn mail_from(&self) -> &str {
        &self.from
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

    /// Counts an attempt from `ip` against its rate limit, and refuses it
    /// while the address must wait after failures.
    pub(crate) fn throttle_ip(&self, ip: Option<IpAddr>) -> Result<(), AccountError> {
        self.prune_now_and_then();
        let Some(ip) = ip else { return Ok(()) };
        if self.per_ip.check_key(&ip).is_err() {
            return Err(AccountError::Throttled);
        }
        self.address_failures.check(&ip).map_err(wait)
    }

    /// Counts an attempt for the account `key` (from `ip`) against its
    /// rate limit, and refuses it while the account must wait after failed
    /// passwords.
    pub(crate) fn throttle_key(&self, ip: Option<IpAddr>, key: Key) -> Result<(), AccountError> {
        if self.per_account.check_key(&(key, ip)).is_err() {
            return Err(AccountError::Throttled);
        }
        self.account_failures.check(&key).map_err(wait)
    }

    /// Both: an attempt from `ip` for the account `key`.
    pub(crate) fn throttle(
        &self,
        ip: Option<IpAddr>,
        key: Option<Key>,
    ) -> Result<(), AccountError> {
        self.throttle_ip(ip)?;
        match key {
            Some(k) => self.throttle_key(ip, k),
            None => Ok(()),
        }
    }

    /// A failed password for `key` from `ip`.
    fn password_failed(&self, ip: Option<IpAddr>, key: Key) {
        self.activity.login_failed();
        self.account_failures.fail(key);
        if let Some(ip) = ip {
            self.address_failures.fail(ip);
        }
    }

    /// Refuses a second-factor code while `account` must wait after wrong
    /// ones.
    pub(crate) fn throttle_code(&self, account: Ref<Account>) -> Result<(), AccountError> {
        self.code_failures.check(&Key::of(account)).map_err(wait)
    }

    /// Counts a wrong second-factor code for `account`.
    pub(crate) fn code_failed(&self, account: Ref<Account>) {
        self.code_failures.fail(Key::of(account));
    }

    /// Drops, once a minute, the limiters' keys that hold nothing any more
    /// (governor keeps every key it has seen until told), so memory taken
    /// by a burst of attempts comes back.
    fn prune_now_and_then(&self) {
        let now = self.started.elapsed().as_secs();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now < last + PRUNE_EVERY.as_secs()
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.prune_limiters();
    }

    /// Drops every limiter's keys that hold nothing any more.
    pub fn prune_limiters(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_account.retain_recent();
        self.per_account.shrink_to_fit();
        self.account_failures.prune();
        self.address_failures.prune();
        self.code_failures.prune();
    }

    /// Sends mail template `template` (see [`crate::mail`]) with `ctx` to
    /// `to`.
    pub(crate) async fn mail(
        &self,
        to: &str,
        template: &str,
        ctx: serde_json::Value,
    ) -> Result<(), AccountError> {
        let (site, base_url) = (&self.site, self.base_url());
        crate::mail::send(
            site,
            &base_url,
            self.mailer.as_ref(),
            &self.from,
            to,
            template,
            ctx,
        )
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
        let token = self
            .site
            .store()
            .write_blocking(move |tx| -> Result<_, AccountError> {
                let no_password = hash.is_none();
                let account = insert_created_account(tx, name, email.clone(), hash, admin, false)?;
                if no_password {
                    return Ok(Some(issue_ticket(
                        tx,
                        purpose::PASSWORD,
                        Some(account),
                        email,
                    )?));
                }
                Ok(None)
            })?;
        self.site.user_store(username)?;
        self.ensure_product(username)?;
        Ok(token.map(|t| format!("{}/reset/{t}", self.base_url())))
    }

    /// Creates an active account for `username` at `email` without a
    /// password (the admin console; the command line can call it too) and
    /// mails its owner a welcome that names them and the site, with a link
    /// to choose their password. Returns whether that mail went out: the
    /// account is made either way, and a reset link can follow.
    pub async fn create_user_welcomed(
        self: &Arc<Self>,
        username: &str,
        email: &str,
    ) -> Result<bool, AccountError> {
        let address = normalize_email(email)?;
        let (me, n, e) = (self.clone(), username.to_string(), address.clone());
        let link = tokio::task::spawn_blocking(move || me.create_user(&n, Some(&e), None, false))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))??;
        let Some(link) = link else {
            return Ok(false);
        };
        let sent = self
            .mail(
                &address,
                "mail/welcome.txt",
                serde_json::json!({ "username": username, "link": link }),
            )
            .await;
        match sent {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::error!(user = %username, error = %e, "the new account's welcome could not be sent");
                Ok(false)
            }
        }
    }

    /// A one-time link to set the administrator's password, if the site
    /// has no administrator with a password yet (creating the `admin`
    /// account on first use).
    pub fn admin_setup_link(&self) -> Result<Option<String>, AccountError> {
        Ok(self.admin_setup()?.map(|s| s.link))
    }

    /// [`Accounts::admin_setup_link`], with the administrator's user name,
    /// which the person setting the password needs to log in afterwards.
    pub fn admin_setup(&self) -> Result<Option<AdminSetup>, AccountError> {
        let existing = self
            .site
            .store()
            .read_blocking(|r| r.query::<Account>().filter(Account::admin.eq(true)).all())?;
        if existing.iter().any(|a| a.password_hash.is_some()) {
            return Ok(None);
        }
        match existing.into_iter().next() {
            None => Ok(self
                .create_user("admin", None, None, true)?
                .map(|link| AdminSetup {
                    username: "admin".into(),
                    link,
                })),
            Some(admin) => {
                let id = admin.id();
                // Only the link printed last works: earlier starts' links
                // stay in logs and terminals.
                let token = self.site.store().write_blocking(move |tx| {
                    end_links(tx, id)?;
                    issue_ticket(tx, purpose::PASSWORD, Some(id), None)
                })?;
                Ok(Some(AdminSetup {
                    username: admin.username.clone(),
                    link: format!("{}/reset/{token}", self.base_url()),
                }))
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
        let account = self.check_password(ip, who, password).await?;
        may_log_in(&account)?;
        if account.totp_enabled {
            self.check_code(account.id(), code).await?;
        }
        self.logged_in(&account).await?;
        Ok(account.username.clone())
    }

    /// The account `who` (a user name or email address) if `password` is
    /// its password: the password alone, no second factor, whatever the
    /// account's state. Takes about as long whether or not the account
    /// exists; failures count towards the back-offs of the account (or
    /// the name) and of the address.
    async fn check_password(
        &self,
        ip: Option<IpAddr>,
        who: &str,
        password: &str,
    ) -> Result<Stored<Account>, AccountError> {
        check_who_len(who)?;
        if longer_than(password, MAX_PASSWORD_LEN) {
            return Err(AccountError::TooLong {
                what: "password",
                max: MAX_PASSWORD_LEN,
            });
        }
        self.throttle_ip(ip)?;
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
        let limit_key = match &found {
            Some(a) => Key::of(a.id()),
            None => Key::name(who),
        };
        self.throttle_key(ip, limit_key)?;
        let pw = password.to_string();
        let hash = found.as_ref().and_then(|a| a.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => password::verify(&pw, &h),
            None => {
                password::verify_dummy(&pw);
                false
            }
        })
        .await
        .map_err(|e| AccountError::Invalid(e.to_string()))?;
        match found {
            Some(account) if ok => Ok(account),
            _ => {
                // Counted alike for names that have no account, so that
                // the answers tell nothing.
                self.password_failed(ip, limit_key);
                Err(AccountError::BadCredentials)
            }
        }
    }

    /// Checks the second-factor `code` of `id` and uses it up, in one write
    /// transaction: the step of the last accepted code is read and written
    /// there, so concurrent log-ins with one code cannot all pass (the
    /// store's writes are serial). A wrong code counts towards the
    /// account's own back-off.
    async fn check_code(&self, id: Ref<Account>, code: Option<&str>) -> Result<(), AccountError> {
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(AccountError::CodeNeeded);
        };
        if self.use_code(id, code, |_| {}).await? {
            Ok(())
        } else {
            Err(AccountError::CodeNeeded)
        }
    }

    /// Checks the second-factor `code` of `id` and uses it up, then applies
    /// `change` to the account, all in one write transaction: the step of
    /// the last accepted code is read and written there, so concurrent
    /// requests with one code cannot all pass (the store's writes are
    /// serial). Whether the code was right; a wrong one counts towards the
    /// account's back-off for codes, and while it must wait this refuses.
    async fn use_code(
        &self,
        id: Ref<Account>,
        code: &str,
        change: impl FnOnce(&mut Account) + Send + 'static,
    ) -> Result<bool, AccountError> {
        self.throttle_code(id)?;
        let code = code.to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let accepted = self
            .site
            .store()
            .write(move |tx| -> mantissa_store::Result<_> {
                let mut a = tx.get(id)?;
                let secret = a.totp_secret.clone().unwrap_or_default();
                let Some(step) =
                    crate::totp::check(&secret, &code, now).filter(|s| *s > a.totp_last_step)
                else {
                    return Ok(false);
                };
                a.totp_last_step = step;
                change(&mut a);
                tx.update(&a)?;
                Ok(true)
            })
            .await?;
        if accepted {
            self.code_failures.clear(&Key::of(id));
        } else {
            self.code_failed(id);
        }
        Ok(accepted)
    }

    /// What every successful log-in does, whatever proved it: the product
    /// is installed (once) and the count of failed log-ins starts again.
    pub(crate) async fn logged_in(&self, account: &Stored<Account>) -> Result<(), AccountError> {
        self.account_failures.clear(&Key::of(account.id()));
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
        check_who_len(username)?;
        check_who_len(email)?;
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
            .write(move |tx| -> Result<_, AccountError> {
                if let Some(invite) = &invite {
                    use_ticket(tx, invite, purpose::INVITE)?;
                }
                if username_taken(tx, &name)? {
                    return Err(AccountError::Taken(name));
                }
                if address_taken(tx, &addr)? {
                    // Answered like a new sign-up, so that sign-up does not
                    // tell who has an account; the address's owner is
                    // mailed instead (below).
                    return Ok(None);
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
                Ok(Some(issue_ticket(
                    tx,
                    purpose::VERIFY,
                    Some(account),
                    Some(addr),
                )?))
            })
            .await?;
        if token.is_some() {
            self.activity.signed_up();
        }
        // Mail goes after the answer either way, so both answers take as
        // long.
        let (site, mailer, from, base_url) = (
            self.site.clone(),
            self.mailer.clone(),
            self.from.clone(),
            self.base_url(),
        );
        let username = username.to_string();
        tokio::spawn(async move {
            let sent = match token {
                Some(token) => {
                    // The person asks for mail to this address: an earlier
                    // bounce's mark on it does not stop it (it comes back
                    // if this one bounces too).
                    if let Err(e) = mantissa_mail::bounces::forgive(&site, &address).await {
                        tracing::error!(error = %e, "lifting a bounce mark failed");
                    }
                    let link = format!("{base_url}/verify/{token}");
                    crate::mail::send(
                        &site,
                        &base_url,
                        mailer.as_ref(),
                        &from,
                        &address,
                        "mail/verify.txt",
                        serde_json::json!({ "username": username, "link": link }),
                    )
                    .await
                    .map_err(AccountError::from)
                }
                None => send_reset(site, mailer, from, base_url, address, Why::SignUpAgain).await,
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, "sending a sign-up mail failed");
            }
        });
        Ok(())
    }

    /// Verifies an email address from its link; returns the user name.
    pub async fn verify(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        let name = self
            .site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::VERIFY)?;
                let (Some(account), Some(address)) = (t.account, t.email.clone()) else {
                    return Err(AccountError::BadLink);
                };
                let mut a = tx.get(account)?;
                if let Some(mut e) = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(address.clone()))
                    .first()?
                {
                    e.verified = true;
                    tx.update(&e)?;
                }
                if a.status == status::UNVERIFIED {
                    a.status = status::ACTIVE.into();
                    tx.update(&a)?;
                }
                let pending = (a.status == status::PENDING).then_some(address);
                Ok((a.username.clone(), pending))
            })
            .await?;
        let (name, pending) = name;
        if let Some(address) = pending {
            // Verified, but not yet approved: told so, so that they do not
            // try to log in and wonder.
            if let Err(e) = self
                .mail(
                    &address,
                    "mail/awaiting_approval.txt",
                    serde_json::json!({ "username": name }),
                )
                .await
            {
                tracing::error!(user = %name, error = %e, "mail that the account awaits approval not sent");
            }
        }
        self.install_later(&name).await?;
        Ok(name)
    }

    /// Emails a password-reset link if an account has this address. Says
    /// nothing either way, and takes as long: the lookup, the ticket and
    /// the mail are done after answering, in the background. An account
    /// gets at most [`RESETS_PER_HOUR`] such mails an hour, whoever asks.
    pub async fn request_reset(&self, ip: Option<IpAddr>, email: &str) -> Result<(), AccountError> {
        check_who_len(email)?;
        self.throttle(ip, Some(Key::name(email)))?;
        // A typo is said (it tells nothing about who has an account).
        let address = normalize_email(email)?;
        let (site, mailer, from, base_url) = (
            self.site.clone(),
            self.mailer.clone(),
            self.from.clone(),
            self.base_url(),
        );
        tokio::spawn(async move {
            if let Err(e) = send_reset(site, mailer, from, base_url, address, Why::Reset).await {
                tracing::error!(error = %e, "sending a reset link failed");
            }
        });
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

    /// Sets a new password from a link; ends every session of the account,
    /// every other link for its owner and every API token (a reset is what
    /// someone does who may have lost control of the account), and turns
    /// two-factor log-in off (the person lost their authenticator, or the
    /// second factor stood in the way of the reset's purpose), mailing the
    /// owner that it did. Returns the user name.
    pub async fn reset(&self, token: &str, new_password: &str) -> Result<String, AccountError> {
        password::check_new(new_password)
            .map_err(|e| AccountError::Invalid(format!("password: {e}")))?;
        let pw = new_password.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let token = token.to_string();
        let (id, name, totp_was_on) = self
            .site
            .store()
            .write(move |tx| -> Result<_, AccountError> {
                let t = use_ticket(tx, &token, purpose::PASSWORD)?;
                let account = t.account.ok_or(AccountError::BadLink)?;
                let mut a = tx.get(account)?;
                a.password_hash = Some(hash);
                a.locked = false;
                a.failed_logins = 0;
                if a.status == status::UNVERIFIED && t.email.is_some() {
                    // The link reached this address: it is verified.
                    a.status = status::ACTIVE.into();
                }
                let totp_was_on = a.totp_enabled;
                a.totp_enabled = false;
                a.totp_secret = None;
                tx.update(&a)?;
                tx.delete_where(SessionRecord::user.eq(a.username.clone()))?;
                end_links(tx, account)?;
                crate::tokens::revoke_all(tx, account)?;
                Ok((account, a.username.clone(), totp_was_on))
            })
            .await?;
        self.account_failures.clear(&Key::of(id));
        self.code_failures.clear(&Key::of(id));
        tracing::info!(user = %name, "password reset from a link");
        if totp_was_on {
            self.mail_second_factor_off(id, &name, false).await;
        }
        Ok(name)
    }

    /// Turns off the second factor of `username` (an administrator's
    /// action, for someone who lost their authenticator), and mails the
    /// owner that it happened. False if it was not on.
    pub async fn clear_second_factor(&self, username: &str) -> Result<bool, AccountError> {
        let name = username.to_string();
        let cleared = self
            .site
            .store()
            .write(move |tx| -> Result<_, AccountError> {
                let mut a = account_named(tx, &name)?;
                if !a.totp_enabled && a.totp_secret.is_none() {
                    return Ok(None);
                }
                let was_on = a.totp_enabled;
                a.totp_enabled = false;
                a.totp_secret = None;
                tx.update(&a)?;
                Ok(was_on.then_some(a.id()))
            })
            .await?;
        let Some(id) = cleared else {
            return Ok(false);
        };
        tracing::warn!(user = %username, "two-factor log-in turned off by an administrator");
        self.mail_second_factor_off(id, username, true).await;
        Ok(true)
    }

    /// Tells the owner of `id` that its second factor was turned off, and
    /// why. A mail that cannot be sent is logged: the change is made.
    async fn mail_second_factor_off(&self, id: Ref<Account>, username: &str, by_admin: bool) {
        let addresses = self
            .site
            .store()
            .read(move |r| {
                r.query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(id))
                    .column(EmailAddress::address)
            })
            .await;
        let addresses = match addresses {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(user = %username, error = %e, "cannot find whom to tell that two-factor log-in is off");
                return;
            }
        };
        for to in addresses {
            let sent = self
                .mail(
                    &to,
                    "mail/two_factor_off.txt",
                    serde_json::json!({ "username": username, "by_admin": by_admin }),
                )
                .await;
            if let Err(e) = sent {
                tracing::error!(user = %username, error = %e, "mail that two-factor log-in is off not sent");
            }
        }
    }

    /// Unlocks an account from the emailed link. Failed log-ins no longer
    /// lock accounts (they make them wait longer and longer); this is
    /// for accounts locked, and links mailed, by earlier versions.
    pub async fn unlock(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        self.site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::UNLOCK)?;
                let account = t.account.ok_or(AccountError::BadLink)?;
                let mut a = tx.get(account)?;
                a.locked = false;
                a.failed_logins = 0;
                tx.update(&a)?;
                Ok(a.username.clone())
            })
            .await
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
        // The password alone: a second factor proves the person at log-in,
        // and they are signed in (asking for it here answered 500).
        self.check_password(None, username, current).await?;
        password::check_new(new)
            .map_err(|e| AccountError::Invalid(format!("new password: {e}")))?;
        let pw = new.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        let name = username.to_string();
        self.site
            .store()
            .write(move |tx| -> Result<_, AccountError> {
                let mut a = account_named(tx, &name)?;
                a.password_hash = Some(hash);
                tx.update(&a)?;
                end_links(tx, a.id())?;
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
        let id = self
            .site
            .store()
            .write_blocking(move |tx| -> mantissa_store::Result<_> {
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
        self.check_password(None, username, password).await?;
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
                    return Err(AccountError::Invalid(
                        "that email address cannot be used".into(),
                    ));
                }
                let a = account_named(tx, &name)?;
                Ok(issue_ticket(
                    tx,
                    purpose::CHANGE_EMAIL,
                    Some(a.id()),
                    Some(addr),
                )?)
            })
            .await?;
        // Asked for by the person: as at sign-up, a bounce's mark is lifted.
        mantissa_mail::bounces::forgive(&self.site, &address).await?;
        self.mail(
            &address,
            "mail/email_change.txt",
            serde_json::json!({ "username": username, "link": format!("{}/email/{token}", self.base_url()) }),
        )
        .await
    }

    /// Completes an email change from its link; returns the new address.
    pub async fn confirm_email_change(&self, token: &str) -> Result<String, AccountError> {
        let token = token.to_string();
        let changed = self
            .site
            .store()
            .write(move |tx| {
                let t = use_ticket(tx, &token, purpose::CHANGE_EMAIL)?;
                let (Some(account), Some(address)) = (t.account, t.email.clone()) else {
                    return Err(AccountError::BadLink);
                };
                if tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::address.eq(address.clone()))
                    .count()?
                    > 0
                {
                    return Err(AccountError::Invalid(
                        "that email address was taken meanwhile".into(),
                    ));
                }
                let old = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(account))
                    .column(EmailAddress::address)?;
                tx.delete_where(EmailAddress::account.eq(account))?;
                // Links mailed to the old address (a reset, another change)
                // die with it.
                end_links(tx, account)?;
                tx.insert(&EmailAddress {
                    address: address.clone(),
                    account,
                    verified: true,
                })?;
                let username = tx.get(account)?.username.clone();
                Ok((address, old, username))
            })
            .await?;
        let (address, old, username) = changed;
        // The old address hears of it too: if it was not its owner who
        // asked, this is how they learn.
        for o in old {
            let sent = self
                .mail(
                    &o,
                    "mail/email_changed.txt",
                    serde_json::json!({ "username": username, "old": o, "new": address }),
                )
                .await;
            if let Err(e) = sent {
                tracing::error!(user = %username, error = %e, "mail to the old address not sent");
            }
        }
        Ok(address)
    }

    /// Starts two-factor set-up: a new secret for `username`, not yet in
    /// force. Returns the secret and the `otpauth://` URL, which names
    /// `issuer` (the site's name) in the person's authenticator app.
    pub async fn totp_begin(
        &self,
        username: &str,
        issuer: &str,
    ) -> Result<(String, String), AccountError> {
        let secret = crate::totp::new_secret();
        let url = crate::totp::url(&secret, username, issuer)
            .ok_or_else(|| AccountError::Invalid("cannot make a two-factor secret".into()))?;
        let (name, s) = (username.to_string(), secret.clone());
        // A new secret per click: limited like a log-in attempt, per account.
        let id = self.account_id(username).await?;
        self.throttle_key(None, Key::of(id))?;
        self.site
            .store()
            .write(move |tx| {
                let mut a = account_named(tx, &name)?;
                if a.totp_enabled {
                    return Err(AccountError::Invalid(
                        "two-factor log-in is already on".into(),
                    ));
                }
                a.totp_secret = Some(s);
                // The last step used was the old secret's: a new secret's
                // codes have never been used.
                a.totp_last_step = 0;
                Ok(tx.update(&a)?)
            })
            .await?;
        Ok((secret, url))
    }

    /// The account called `username`.
    async fn account_id(&self, username: &str) -> Result<Ref<Account>, AccountError> {
        let n = username.to_string();
        self.site
            .store()
            .read(move |r| account_named(r, &n).map(|a| a.id()))
            .await
    }

    /// Turns two-factor log-in on or off, given a current code. Wrong codes
    /// count towards the account's back-off for codes, as at log-in.
    pub async fn totp_set(&self, username: &str, code: &str, on: bool) -> Result<(), AccountError> {
        let id = self.account_id(username).await?;
        let accepted = self
            .use_code(id, code, move |a| {
                a.totp_enabled = on;
                if !on {
                    a.totp_secret = None;
                }
            })
            .await?;
        if !accepted {
            return Err(AccountError::Invalid(
                "that code is not right; try the current one".into(),
            ));
        }
        Ok(())
    }

    /// Abandons a two-factor set-up that was begun and not turned on:
    /// the new secret is forgotten. Does nothing once it is on.
    pub async fn totp_cancel(&self, username: &str) -> Result<(), AccountError> {
        let name = username.to_string();
        self.site
            .store()
            .write(move |tx| {
                let mut a = account_named(tx, &name)?;
                if a.totp_enabled || a.totp_secret.is_none() {
                    return Ok(());
                }
                a.totp_secret = None;
                Ok(tx.update(&a)?)
            })
            .await
    }

    /// The account called `username`, if there is one.
    async fn account_named(&self, username: &str) -> Result<Option<Account>, AccountError> {
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
            .map(|a| a.into_inner()))
    }

    /// The status of the account called `username` (one of
    /// [`status`]), if there is one.
    pub async fn account_status(&self, username: &str) -> Result<Option<String>, AccountError> {
        Ok(self.account_named(username).await?.map(|a| a.status))
    }

    /// Whether `username` has two-factor log-in on.
    pub async fn totp_enabled(&self, username: &str) -> Result<bool, AccountError> {
        Ok(self
            .account_named(username)
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
