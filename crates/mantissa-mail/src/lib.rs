//! Mantissa's mail: the one outbound-mail interface every flow sends
//! through ([`Mailer`]), with three implementations: the persistent queue
//! ([`MailQueue`], in the site store, delivering through the relay with
//! retries: what a site with a relay uses), a direct SMTP relay
//! ([`SmtpRelay`], on `mail-send`, one best-effort attempt) and a
//! development outbox folder ([`Outbox`]). Mail from a domain the site has a
//! DKIM key for is signed ([`dkim`]); each queued copy has a VERP return
//! path, and bounces coming back to it stop mail to failing addresses
//! ([`bounces`]). Delivery straight to the recipients' MX is still to come
//! behind the same interface.
//!
//! Every message sent is logged (recipient and subject, never the body,
//! which may hold a one-time link).
//!
//! The relay password is kept sealed in the site store, under a key kept
//! outside it ([`secret`]), or not kept at all when the environment gives
//! it ([`PASSWORD_ENV`]). [`MailConfig`] version 1 kept it in plain text;
//! its upgrader seals it.
//!
//! # Text, HTML, and bulk mail
//!
//! An [`OutgoingMail`] is plain text, or text with an HTML alternative
//! (`html`), sent as `multipart/alternative`, text first ([`render`]).
//! Every message gets a `Date` and a `Message-ID` in its sender's domain.
//!
//! Bulk mail (a digest, a notification: mail the person did not just ask
//! for) names its list and carries a one-click unsubscribe link
//! ([`unsubscribe`]): set `unsubscribe` to [`unsubscribe::link`], and the
//! message carries `List-Unsubscribe` and `List-Unsubscribe-Post`
//! (RFC 8058), which DKIM signs. `mantissa-accounts` serves the link:
//! a mail provider's one-click POST, or a person's visit and button,
//! record that the address left the list. Ask [`unsubscribe::is_unsubscribed`]
//! before composing; the queue and the outbox also refuse, quietly (a line
//! in the log), bulk mail to an address that left its list.
//!
//! ```
//! use mantissa_mail::{Mailer, Outbox, OutgoingMail, unsubscribe};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let site = mantissa_store::Site::open(dir.path().join("site"))?;
//! # let outbox = dir.path().join("outbox");
//! # let written = || std::fs::read_dir(&outbox).map_or(0, |d| d.count());
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! // A site's mailer: `MailConfig::mailer`; here its development outbox.
//! let mailer = Outbox::for_site(&outbox, site.clone());
//! let digest = |to: &str, link: String| OutgoingMail {
//!     from: "Example <news@example.org>".into(),
//!     to: vec![to.into()],
//!     subject: "This week on Example".into(),
//!     text: format!("Three new posts: https://example.org/posts\n\nNo more digests: {link}\n"),
//!     html: Some(format!(
//!         "<p>Three new <a href=\"https://example.org/posts\">posts</a>.</p>\
//!          <p><a href=\"{link}\">No more digests</a></p>"
//!     )),
//!     unsubscribe: Some(link),
//! };
//! let to = "ann@example.net";
//! if !unsubscribe::is_unsubscribed(&site, to, "digest").await? {
//!     let link = unsubscribe::link(&site, "https://example.org", to, "digest").await?;
//!     mailer.send(digest(to, link)).await?;
//! }
//! # assert_eq!(written(), 1);
//! // The person presses "Unsubscribe" in their mail reader: their provider
//! // POSTs to the link, and the accounts' route records this.
//! unsubscribe::unsubscribe(&site, to, "digest").await?;
//! assert!(unsubscribe::is_unsubscribed(&site, to, "digest").await?);
//! // An application that sends anyway sends nothing (the log says so).
//! let link = unsubscribe::link(&site, "https://example.org", to, "digest").await?;
//! mailer.send(digest(to, link)).await?;
//! # assert_eq!(written(), 1);
//! # Ok::<(), mantissa_mail::MailError>(())
//! # })?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use mail_builder::MessageBuilder;
use mantissa_store::{Item, Site, StoreError, upgrader};

pub mod bounces;
pub mod dkim;
pub mod dmarc;
pub mod inbound;
mod queue;
pub mod secret;

pub use secret::{SecretError, SecretKey};
pub mod unsubscribe;

pub use dkim::DkimKey;

pub use queue::{
    KEEP_DELIVERED, MailQueue, MailState, QueueRun, QueueRunner, QueueSettings, QueueThread,
    QueuedMail, STOP_WAIT, admin,
};

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMail {
    /// The sender's address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// An HTML alternative of `text`, saying the same with the same links:
    /// with it the message is `multipart/alternative` (text first, HTML
    /// second, as RFC 2046 orders them, plainest first); without it, a
    /// single text part.
    pub html: Option<String>,
    /// For bulk mail (notifications, digests: mail that does not answer
    /// something the person just did), the HTTPS one-click unsubscribe URL
    /// ([`unsubscribe::link`]): the message then carries
    /// `List-Unsubscribe: <URL>` and `List-Unsubscribe-Post:
    /// List-Unsubscribe=One-Click` (RFC 8058), both signed by DKIM, and is
    /// not sent to an address that has unsubscribed from its list. None
    /// for mail a person asked for (verification, reset). (An `http://`
    /// link is accepted, for a development site; providers offer one-click
    /// only for HTTPS.)
    pub unsubscribe: Option<String>,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The relay refused or could not be reached.
    #[error("sending through {relay} failed: {reason}")]
    Relay {
        /// host:port
        relay: String,
        /// What went wrong.
        reason: String,
    },
    /// The outbox could not be written.
    #[error("writing to the outbox {}: {reason}", dir.display())]
    Outbox {
        /// The folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The message itself is malformed.
    #[error("the message cannot be built: {0}")]
    Build(String),
    /// A bulk mail's list name is not one.
    #[error("{list:?} is not a list name: 1 to 64 lowercase letters, digits, '.', '_' and '-'")]
    BadList {
        /// The name given.
        list: String,
    },
    /// DKIM: a key could not be made or used.
    #[error("DKIM: {0}")]
    Dkim(String),
    /// The queue's store failed.
    #[error("the mail queue: {0}")]
    Store(#[from] StoreError),
    /// No queued message has this id.
    #[error("no message {id} in the mail queue")]
    NoSuchMessage {
        /// The id asked for.
        id: i64,
    },
    /// The relay password could not be sealed or opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The message was delivered already: retrying would send it twice.
    #[error("message {id} was delivered already")]
    AlreadyDelivered {
        /// The id asked for.
        id: i64,
    },
}

/// A boxed future, as mailers return them.
pub type MailFuture = Pin<Box<dyn Future<Output = Result<(), MailError>> + Send>>;

/// Sends mail.
pub trait Mailer: Send + Sync + 'static {
    /// Sends one message.
    fn send(&self, mail: OutgoingMail) -> MailFuture;

    /// The folder messages are written to, for a mailer that writes them
    /// to files rather than sending them ([`Outbox`]); none for the others.
    fn outbox_dir(&self) -> Option<&Path> {
        None
    }
}

/// The message as RFC 5322 bytes: `From`, `To`, `Subject`, `Date`, a
/// `Message-ID` in the sender's domain ([`message_id`]), the list headers
/// of bulk mail, and the text part, or the text and HTML parts as
/// `multipart/alternative`.
pub fn render(mail: &OutgoingMail) -> Result<Vec<u8>, MailError> {
    builder(mail)?
        .write_to_vec()
        .map_err(|e| MailError::Build(e.to_string()))
}

/// The message, ready to write or hand to mail-send.
fn builder(mail: &OutgoingMail) -> Result<MessageBuilder<'_>, MailError> {
    let mut message = MessageBuilder::new()
        .from(mail.from.as_str())
        .to(mail.to.iter().map(String::as_str).collect::<Vec<_>>())
        .subject(mail.subject.as_str())
        .message_id(message_id(&mail.from))
        .text_body(mail.text.as_str());
    if let Some(html) = &mail.html {
        message = message.html_body(html.as_str());
    }
    if let Some(url) = &mail.unsubscribe {
        // Written between angle brackets, unfolded: a URL with a space, an
        // angle bracket or a line break in it would end the header early
        // (or start another one).
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'<' || b == b'>')
        {
            return Err(MailError::Build(format!(
                "the unsubscribe link {url:?} is not an http(s) URL without spaces or angle brackets"
            )));
        }
        message = message
            .header(
                "List-Unsubscribe",
                mail_builder::headers::url::URL::new(url.as_str()),
            )
            .header(
                "List-Unsubscribe-Post",
                mail_builder::headers::raw::Raw::new("List-Unsubscribe=One-Click"),
            );
    }
    Ok(message)
}

/// A new Message-ID (without its angle brackets) in the domain of the
/// sender `from`: `<time>.<random>@<domain>`. mail-builder would name the
/// machine's host name instead, which says nothing a receiver can check
/// and tells it the name of a machine inside the site.
pub fn message_id(from: &str) -> String {
    let domain = dkim::sender_domain(from).unwrap_or_else(|| "localhost".into());
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).expect("the OS random source works");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{stamp}.{hex}@{domain}")
}

/// `mail` as RFC 5322 bytes ([`render`]), signed with the site's DKIM key
/// for its sender's domain when it has one ([`dkim`]); the signing runs on
/// a blocking thread (an RSA signature is about a millisecond of CPU).
pub async fn render_signed(mail: &OutgoingMail, site: &Site) -> Result<Vec<u8>, MailError> {
    sign_as_sender(site, &mail.from, render(mail)?).await
}

/// `bytes` (a whole message from `from`) signed with the site's DKIM key
/// for `from`'s domain, or as they are when it has none.
pub async fn sign_as_sender(site: &Site, from: &str, bytes: Vec<u8>) -> Result<Vec<u8>, MailError> {
    let Some(domain) = dkim::sender_domain(from) else {
        return Ok(bytes);
    };
    match DkimKey::for_domain_async(site, &domain).await? {
        None => Ok(bytes),
        Some(key) => tokio::task::spawn_blocking(move || key.sign(&bytes))
            .await
            .map_err(|e| MailError::Dkim(format!("signing stopped: {e}")))?,
    }
}

/// Runs `f` with each provider of `I` installed on `store`, highest
/// priority first, each in a write of its own: one that fails (an error or
/// a panic) is logged, as `what`, and the others still run. For telling
/// applications what happened (mail arrived, an address is failing) after
/// it is committed, so that no application's bug can undo it.
pub(crate) async fn each_powerup<I, F>(store: &mantissa_store::Store, what: &'static str, f: F)
where
    I: ?Sized + mantissa_store::Interface,
    F: Fn(&I, &mut mantissa_store::Write<'_>) -> Result<(), StoreError> + Clone + Send + 'static,
{
    let count = match store
        .read(|r| Ok::<_, StoreError>(r.powerups::<I>()?.len()))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, what, "finding the powerups failed");
            return;
        }
    };
    for k in 0..count {
        let f = f.clone();
        let done = store
            .write(move |tx| {
                let providers = tx.powerups::<I>()?;
                match providers.get(k) {
                    Some(p) => f(p.as_ref(), tx),
                    None => Ok(()),
                }
            })
            .await;
        if let Err(e) = done {
            tracing::error!(error = %e, what, provider = k, "a powerup failed; what it was told of stands");
        }
    }
}

/// Whether `host` names this machine: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Writes each message as an `.eml` file in a folder: the development
/// default, and what tests read.
pub struct Outbox {
    dir: PathBuf,
    /// The site whose DKIM keys sign what is written, if any.
    site: Option<Site>,
}

impl Outbox {
    /// An outbox in `dir` (created when the first message is written).
    pub fn new(dir: impl Into<PathBuf>) -> Outbox {
        Outbox {
            dir: dir.into(),
            site: None,
        }
    }

    /// An outbox in `dir` that signs each message as `site`'s queue would
    /// ([`render_signed`]), so that a developer reads what would go out.
    pub fn for_site(dir: impl Into<PathBuf>, site: Site) -> Outbox {
        Outbox {
            dir: dir.into(),
            site: Some(site),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Mailer for Outbox {
    fn send(&self, mail: OutgoingMail) -> MailFuture {
        let dir = self.dir.clone();
        let site = self.site.clone();
        Box::pin(async move {
            let mail = match &site {
                Some(site) => match unsubscribe::without_unsubscribed(site, mail).await? {
                    Some(mail) => mail,
                    None => return Ok(()),
                },
                None => mail,
            };
            let bytes = match &site {
                Some(site) => render_signed(&mail, site).await?,
                None => render(&mail)?,
            };
            let err = |e: std::io::Error| MailError::Outbox {
                dir: dir.clone(),
                reason: e.to_string(),
            };
            tokio::fs::create_dir_all(&dir).await.map_err(err)?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            let name = format!("{stamp}-{}.eml", std::process::id());
            let tmp = dir.join(format!(".{name}.partial"));
            tokio::fs::write(&tmp, &bytes).await.map_err(err)?;
            tokio::fs::rename(&tmp, dir.join(&name))
                .await
                .map_err(err)?;
            tracing::info!(to = ?mail.to, subject = %mail.subject, file = %name, "mail written to the outbox");
            Ok(())
        })
    }

    fn outbox_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Sends through an SMTP relay: one attempt per message (the queue, built
/// on it, retries).
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    host: String,
    port: u16,
    implicit_tls: bool,
    credentials: Option<(String, String)>,
    /// Certificates trusted besides the usual authorities (a relay with a
    /// private authority's certificate).
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An open session with a relay: over TLS, or in the clear when the relay
/// offers no STARTTLS and no password is to be sent.
pub(crate) enum RelaySession {
    Plain(mail_send::SmtpClient<tokio::net::TcpStream>),
    Tls(Box<mail_send::SmtpClient<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl SmtpRelay {
    /// A relay at `host:port`; `implicit_tls` for port 465-style TLS (STARTTLS
    /// is used when the relay offers it otherwise).
    pub fn new(host: impl Into<String>, port: u16, implicit_tls: bool) -> SmtpRelay {
        SmtpRelay {
            host: host.into(),
            port,
            implicit_tls,
            credentials: None,
            tls: None,
        }
    }

    /// Trusts `roots` (and only them) for the relay's certificate.
    pub fn trusting(mut self, roots: rustls::RootCertStore) -> Result<Self, MailError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| MailError::Build(format!("TLS for the relay: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        self.tls = Some(Arc::new(config));
        Ok(self)
    }

    /// The client builder for this relay.
    pub(crate) fn builder(&self) -> mail_send::SmtpClientBuilder<String> {
        let mut builder = match &self.tls {
            Some(config) => mail_send::SmtpClientBuilder::new_with_tls_connector(
                self.host.clone(),
                self.port,
                tokio_rustls::TlsConnector::from(config.clone()),
            ),
            None => mail_send::SmtpClientBuilder::new(self.host.clone(), self.port)
                .expect("a host name and port make a builder"),
        }
        .implicit_tls(self.implicit_tls)
        .timeout(std::time::Duration::from_secs(60));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials((user.clone(), password.clone()));
        }
        builder
    }

    /// Connects, says EHLO, turns TLS on (at once on a port-465 relay, or
    /// by STARTTLS when offered) and logs in. A relay that offers no TLS
    /// gets no password, unless it is on this machine (`localhost`, a
    /// loopback address: the password does not leave it): it is refused,
    /// saying so. Why not mail-send's own
    /// `connect_plain`: it never turns STARTTLS on, and would send the
    /// password in the clear. (TCP_NODELAY: without it, mail-send's two
    /// writes at the end of DATA wait for the relay's delayed ACK, 40 ms a
    /// message, measured by the queue's benchmark.)
    pub(crate) async fn open(&self) -> Result<RelaySession, String> {
        let builder = self.builder();
        let why = |e: mail_send::Error| e.to_string();
        if self.implicit_tls {
            let client = builder.connect().await.map_err(why)?;
            let _ = client.stream.get_ref().0.set_nodelay(true);
            return Ok(RelaySession::Tls(Box::new(client)));
        }
        let mut client = self
            .builder()
            .say_ehlo(false)
            .connect_plain()
            .await
            .map_err(why)?;
        let _ = client.stream.set_nodelay(true);
        let ehlo = client.ehlo(&builder.local_host).await.map_err(why)?;
        if ehlo.has_capability(smtp_proto::EXT_START_TLS) {
            let mut tls = client
                .start_tls(&builder.tls_connector, builder.tls_hostname.as_ref())
                .await
                .map_err(why)?;
            let capabilities = tls
                .capabilities(&builder.local_host, false)
                .await
                .map_err(why)?;
            if let Some(credentials) = &builder.credentials {
                tls.authenticate(credentials, &capabilities)
                    .await
                    .map_err(why)?;
            }
            Ok(RelaySession::Tls(Box::new(tls)))
        } else if builder.credentials.is_some() && !is_loopback(&self.host) {
            Err("the relay offers no STARTTLS, and the password is not sent in the clear (a relay on port 465: mail set --tls)".into())
        } else {
            if let Some(credentials) = &builder.credentials {
                client.authenticate(credentials, &ehlo).await.map_err(why)?;
            }
            Ok(RelaySession::Plain(client))
        }
    }

    /// Logs in with a user name and password.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }
}

impl Mailer for SmtpRelay {
    fn send(&self, mail: OutgoingMail) -> MailFuture {
        let relay_at = self.clone();
        Box::pin(async move {
            let relay = relay_at.address();
            let fail = |reason: String| MailError::Relay {
                relay: relay.clone(),
                reason,
            };
            let message = builder(&mail)?;
            let sent = match relay_at.open().await.map_err(fail)? {
                RelaySession::Tls(mut c) => c.send(message).await,
                RelaySession::Plain(mut c) => c.send(message).await,
            };
            sent.map_err(|e| fail(e.to_string()))?;
            tracing::info!(to = ?mail.to, subject = %mail.subject, relay = %relay, "mail sent");
            Ok(())
        })
    }
}

/// What the relay password is sealed for (the associated data of
/// [`SecretKey::seal`]), and what its errors call it.
const PASSWORD: &str = "the relay password";

/// The environment variable that gives the relay password, in place of the
/// one kept (sealed) in the site store: for a deployment whose secrets come
/// from its environment.
pub const PASSWORD_ENV: &str = "MANTISSA_MAIL_PASSWORD";

/// How the site sends mail, kept in the site store.
///
/// Version 2 keeps the relay password sealed ([`secret`]) in
/// `password_sealed`; version 1 kept it in plain text in `password`, and
/// its upgrader seals it with the site's key (made in the site's folder if
/// there is none yet; from `MANTISSA_SECRET_KEY` on PostgreSQL, where a
/// site that had a password cannot open without it). The upgrade rewrites
/// the row, but SQLite may keep the old text in the file's free pages
/// until they are reused: change the relay's password after upgrading a
/// site that kept it in plain text (`mantissa backup` writes a copy
/// without free pages).
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.mail_config", version = 2)]
pub struct MailConfig {
    /// The sender address of the site's own mail.
    pub from: String,
    /// `host:port` of the SMTP relay; none means the outbox folder.
    pub relay: Option<String>,
    /// Whether the relay uses implicit TLS (port 465).
    pub relay_tls: bool,
    /// Relay user name.
    pub username: Option<String>,
    /// The relay password, sealed under the site's secret key: never the
    /// password itself. Set it with [`MailConfig::set_password`], read it
    /// with [`MailConfig::password`].
    pub password_sealed: Option<String>,
}

upgrader!(MailConfig, 1, |item| {
    let plain: Option<String> = item.get("password")?;
    item.remove("password");
    let sealed = match plain {
        Some(p) if !secret::is_sealed(&p) => {
            // The site store is `<site>/site.sqlite`; on PostgreSQL it has
            // no folder, and the key comes from the environment only.
            let path = item.store_path();
            let folder = path
                .file_name()
                .is_some_and(|n| n == "site.sqlite")
                .then(|| path.parent())
                .flatten();
            let seal = || SecretKey::find(folder, true, PASSWORD)?.seal(PASSWORD, &p);
            Some(seal().map_err(|e| StoreError::Constraint(e.to_string()))?)
        }
        other => other,
    };
    item.set("password_sealed", sealed);
    Ok(())
});

impl MailConfig {
    /// The site's mail configuration, if set.
    pub fn load(site: &Site) -> Result<Option<MailConfig>, StoreError> {
        Ok(site
            .store()
            .read_blocking(|r| r.query::<MailConfig>().first())?
            .map(|c| c.into_inner()))
    }

    /// Stores the configuration.
    pub fn save(site: &Site, config: MailConfig) -> Result<(), StoreError> {
        site.store()
            .write_blocking(move |tx| tx.put_only(config).map(drop))
    }

    /// The key that seals `site`'s relay password ([`SecretKey::find`]):
    /// from `MANTISSA_SECRET_KEY`, or else the key file in the site's
    /// folder (made now when `make`; never on PostgreSQL, whose nodes keep
    /// no files).
    pub fn secret_key(site: &Site, make: bool) -> Result<SecretKey, SecretError> {
        let folder = (!site.on_postgres()).then(|| site.root());
        SecretKey::find(folder, make, PASSWORD)
    }

    /// Sets the relay password (none for none), sealed with `site`'s key;
    /// the configuration is stored by [`MailConfig::save`].
    pub fn set_password(&mut self, site: &Site, password: Option<&str>) -> Result<(), SecretError> {
        self.password_sealed = match password {
            None => None,
            Some(p) => Some(MailConfig::secret_key(site, true)?.seal(PASSWORD, p)?),
        };
        Ok(())
    }

    /// The relay password: `MANTISSA_MAIL_PASSWORD` when it is set, or else
    /// the stored one, opened with `site`'s key. A key that does not open
    /// it is an error that says what to do, never a garbled password.
    pub fn password(&self, site: &Site) -> Result<Option<String>, SecretError> {
        if let Some(p) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
            return Ok(Some(p));
        }
        match &self.password_sealed {
            None => Ok(None),
            Some(sealed) => MailConfig::secret_key(site, false)?
                .open(PASSWORD, sealed)
                .map(Some),
        }
    }

    /// The relay this configuration names, if any, logging in with the
    /// user name and [`MailConfig::password`].
    pub fn smtp_relay(&self, site: &Site) -> Result<Option<SmtpRelay>, MailError> {
        let Some(relay) = self.relay.as_ref() else {
            return Ok(None);
        };
        let (host, port) = relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .unwrap_or((relay.clone(), 25));
        let mut r = SmtpRelay::new(host, port, self.relay_tls);
        if let Some(u) = &self.username
            && let Some(p) = self.password(site)?
        {
            r = r.with_credentials(u.clone(), p);
        }
        Ok(Some(r))
    }

    /// The queue this configuration describes: one delivering through the
    /// relay, when there is one and not in development mode, retrying as
    /// the site's [`QueueConfig`] says. An error if the relay's password
    /// cannot be opened ([`MailConfig::password`]).
    pub fn queue(
        config: Option<&MailConfig>,
        site: &Site,
        dev: bool,
    ) -> Result<Option<MailQueue>, MailError> {
        let Some(config) = config.filter(|_| !dev) else {
            return Ok(None);
        };
        let Some(relay) = config.smtp_relay(site)? else {
            return Ok(None);
        };
        let settings = match QueueConfig::load(site) {
            Ok(c) => c.unwrap_or_default().settings(),
            Err(e) => {
                tracing::error!(error = %e, "reading the mail queue's settings failed; using the defaults");
                QueueSettings::default()
            }
        };
        Ok(Some(MailQueue::new(site.clone(), relay, settings)))
    }

    /// The mailer this configuration describes: the queue (delivering
    /// through the relay), or the outbox in `<site>/outbox` when there is no
    /// relay (always in development mode). The outbox is written at once,
    /// without the queue: a file written is as durable as a queued item,
    /// and development wants to read it straight away.
    pub fn mailer(
        config: Option<&MailConfig>,
        site: &Site,
        dev: bool,
    ) -> Result<Arc<dyn Mailer>, MailError> {
        Ok(match MailConfig::queue(config, site, dev)? {
            Some(queue) => Arc::new(queue),
            None => Arc::new(Outbox::for_site(site.root().join("outbox"), site.clone())),
        })
    }
}

/// How the site's mail queue retries, kept in the site store beside
/// [`MailConfig`] (an item of its own, so that the relay settings written
/// by earlier versions need no upgrade).
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.mail_queue_config", version = 1)]
pub struct QueueConfig {
    /// Seconds of temporary failures after which a message is given up.
    pub give_up_after_secs: i64,
    /// Seconds before the first retry (each later wait doubles, up to an
    /// hour).
    pub first_retry_secs: i64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = QueueSettings::default();
        QueueConfig {
            give_up_after_secs: d.give_up_after.as_secs() as i64,
            first_retry_secs: d.first_retry.as_secs() as i64,
        }
    }
}

impl QueueConfig {
    /// The site's queue settings, if set.
    pub fn load(site: &Site) -> Result<Option<QueueConfig>, StoreError> {
        Ok(site
            .store()
            .read_blocking(|r| r.query::<QueueConfig>().first())?
            .map(|c| c.into_inner()))
    }

    /// Stores the settings.
    pub fn save(site: &Site, config: QueueConfig) -> Result<(), StoreError> {
        site.store()
            .write_blocking(move |tx| tx.put_only(config).map(drop))
    }

    /// The queue's settings with these times.
    pub fn settings(&self) -> QueueSettings {
        let secs = |s: i64| std::time::Duration::from_secs(s.max(0) as u64);
        let d = QueueSettings::default();
        QueueSettings {
            give_up_after: secs(self.give_up_after_secs),
            first_retry: secs(self.first_retry_secs).min(d.max_retry),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_may_get_a_password_in_the_clear() {
        for host in ["localhost", "127.0.0.1", "127.8.0.2", "::1", "[::1]"] {
            assert!(super::is_loopback(host), "{host}");
        }
        for host in [
            "smtp.example.org",
            "10.0.0.1",
            "192.168.1.1",
            "localhost.example.org",
        ] {
            assert!(!super::is_loopback(host), "{host}");
        }
    }
}
