//! Mantissa's mail: the one outbound-mail interface every flow sends
//! through ([`Mailer`]), with three implementations: the persistent queue
//! ([`MailQueue`], in the site store, delivering through the relay with
//! retries: what a site with a relay uses), a direct SMTP relay
//! ([`SmtpRelay`], on `mail-send`, one best-effort attempt) and a
//! development outbox folder ([`Outbox`]). Mail from a domain the site has a
//! DKIM key for is signed ([`dkim`]); VERP and delivery straight to the
//! recipients' MX are still to come behind the same interface.
//!
//! Every message sent is logged (recipient and subject, never the body,
//! which may hold a one-time link).
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
use mantissa_store::{Item, Site, StoreError};

pub mod dkim;
mod queue;
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
    let bytes = render(mail)?;
    let Some(domain) = dkim::sender_domain(&mail.from) else {
        return Ok(bytes);
    };
    match DkimKey::for_domain_async(site, &domain).await? {
        None => Ok(bytes),
        Some(key) => tokio::task::spawn_blocking(move || key.sign(&bytes))
            .await
            .map_err(|e| MailError::Dkim(format!("signing stopped: {e}")))?,
    }
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
}

/// Sends through an SMTP relay: one attempt per message (the queue, built
/// on it, retries).
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    host: String,
    port: u16,
    implicit_tls: bool,
    credentials: Option<(String, String)>,
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
        let host = self.host.clone();
        let port = self.port;
        let implicit = self.implicit_tls;
        let credentials = self.credentials.clone();
        Box::pin(async move {
            let relay = format!("{host}:{port}");
            let fail = |e: mail_send::Error| MailError::Relay {
                relay: relay.clone(),
                reason: e.to_string(),
            };
            let message = builder(&mail)?;
            let mut builder = mail_send::SmtpClientBuilder::new(host.as_str(), port)
                .map_err(|reason| MailError::Relay {
                    relay: relay.clone(),
                    reason,
                })?
                .implicit_tls(implicit)
                .timeout(std::time::Duration::from_secs(30));
            if let Some((user, password)) = &credentials {
                builder = builder.credentials((user.as_str(), password.as_str()));
            }
            if implicit {
                builder
                    .connect()
                    .await
                    .map_err(fail)?
                    .send(message)
                    .await
                    .map_err(fail)?;
            } else {
                builder
                    .connect_plain()
                    .await
                    .map_err(fail)?
                    .send(message)
                    .await
                    .map_err(fail)?;
            }
            tracing::info!(to = ?mail.to, subject = %mail.subject, relay = %relay, "mail sent");
            Ok(())
        })
    }
}

/// How the site sends mail, kept in the site store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.mail_config", version = 1)]
pub struct MailConfig {
    /// The sender address of the site's own mail.
    pub from: String,
    /// `host:port` of the SMTP relay; none means the outbox folder.
    pub relay: Option<String>,
    /// Whether the relay uses implicit TLS (port 465).
    pub relay_tls: bool,
    /// Relay user name.
    pub username: Option<String>,
    /// Relay password.
    pub password: Option<String>,
}

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

    /// The relay this configuration names, if any.
    pub fn smtp_relay(&self) -> Option<SmtpRelay> {
        let relay = self.relay.as_ref()?;
        let (host, port) = relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .unwrap_or((relay.clone(), 25));
        let mut r = SmtpRelay::new(host, port, self.relay_tls);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            r = r.with_credentials(u.clone(), p.clone());
        }
        Some(r)
    }

    /// The queue this configuration describes: one delivering through the
    /// relay, when there is one and not in development mode, retrying as
    /// the site's [`QueueConfig`] says.
    pub fn queue(config: Option<&MailConfig>, site: &Site, dev: bool) -> Option<MailQueue> {
        let relay = config.and_then(MailConfig::smtp_relay).filter(|_| !dev)?;
        let settings = match QueueConfig::load(site) {
            Ok(c) => c.unwrap_or_default().settings(),
            Err(e) => {
                tracing::error!(error = %e, "reading the mail queue's settings failed; using the defaults");
                QueueSettings::default()
            }
        };
        Some(MailQueue::new(site.clone(), relay, settings))
    }

    /// The mailer this configuration describes: the queue (delivering
    /// through the relay), or the outbox in `<site>/outbox` when there is no
    /// relay (always in development mode). The outbox is written at once,
    /// without the queue: a file written is as durable as a queued item,
    /// and development wants to read it straight away.
    pub fn mailer(config: Option<&MailConfig>, site: &Site, dev: bool) -> Arc<dyn Mailer> {
        match MailConfig::queue(config, site, dev) {
            Some(queue) => Arc::new(queue),
            None => Arc::new(Outbox::for_site(site.root().join("outbox"), site.clone())),
        }
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
