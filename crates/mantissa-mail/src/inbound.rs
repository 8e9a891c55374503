//! Receiving mail: an SMTP server (RFC 5321) that accepts mail for the
//! site's people and delivers each message into the recipient's own store
//! as an item ([`InboundMail`], the raw message kept as its attached file),
//! and hands mail to the site's return paths (`bounces+…@`) to the bounce
//! processing ([`crate::bounces`]) instead of to anybody.
//!
//! It is a [`Protocol`] of `mantissa-server`, so the connection host's
//! guard applies as to HTTP: connection caps overall and per address, the
//! idle watch, and the head watch (a command line must arrive within the
//! header timeout; a client that trickles one byte at a time is closed).
//! The session's own limits are [`SmtpLimits`]: message size, recipients
//! per message, unknown recipients per session (after which the session
//! is closed, so that guessing who has an account costs a connection per
//! few guesses, and connections are capped per address), commands per
//! session, and a session's total time.
//!
//! Commands are parsed by `smtp-proto` (Stalwart's); what this module
//! writes by hand is the session's state machine, which no crate offers
//! apart from a whole mail server. STARTTLS is offered when the port has a
//! certificate; a submission port ([`SmtpProtocol::submission`]) takes mail
//! only after TLS and a log-in. Each message delivered carries what the
//! server found of its sender (SPF, DKIM and DMARC, by `mail-auth`, on the
//! item and as an `Authentication-Results` header), and is handed to the
//! [`MailHandler`]s installed on the person's store.
//!
//! Who receives what is the site's business, not this crate's (it knows no
//! accounts): a [`Recipients`] given by whoever serves says whether an
//! address is someone's and delivers to them.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use mantissa_server::{BoxFuture, Connection, Protocol, Refusal};
use mantissa_store::{Item, Site, Timestamp};
use smtp_proto::request::receiver::RequestReceiver;
use smtp_proto::{Error as ParseError, Request, request::receiver::DataReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A message received for a person, in their store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.inbound_mail", version = 1)]
pub struct InboundMail {
    /// The envelope sender (`MAIL FROM`; empty for a bounce).
    pub envelope_from: String,
    /// The envelope recipient this copy was for.
    pub envelope_to: String,
    /// The `From` header.
    pub from: String,
    /// The subject.
    pub subject: String,
    /// The `Message-ID`, if it has one.
    pub message_id: Option<String>,
    /// When it arrived.
    #[item(index)]
    pub received_at: Timestamp,
    /// Its size in bytes (the raw message is the item's attached file
    /// [`RAW_FILE`]).
    pub size: i64,
    /// The plain-text body, or the text of its HTML, cut at
    /// [`TEXT_LIMIT`] bytes: for listings and search.
    pub text: String,
    /// SPF's verdict on the envelope sender and the sending address
    /// (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`,
    /// `permerror`).
    pub spf: String,
    /// DKIM's on the message's signatures (the best of them; `none`
    /// unsigned).
    pub dkim: String,
    /// DMARC's: whether the `From` domain's policy is met by an aligned
    /// DKIM or SPF pass (`pass`, `fail`, `none`, …). The raw message
    /// carries all three in an `Authentication-Results` header.
    pub dmarc: String,
}

/// What an application installs on a person's store (a powerup,
/// [`mantissa_store::powerup!`]) to be handed each message that arrives
/// for them: to file it, answer it, make a task of it.
///
/// Each handler runs in a write of its own after the message is stored,
/// highest priority first; one that fails is logged and the others still
/// run: the message stays delivered either way.
///
/// ```
/// use mantissa_mail::inbound::{InboundMail, MailHandler};
/// use mantissa_store::{Item, Stored, StoreError, Write, powerup};
///
/// /// Keeps the subject of every message from the boss.
/// #[derive(Item)]
/// #[item(name = "doc.boss_watch", version = 1)]
/// struct BossWatch { boss: String }
///
/// #[derive(Item)]
/// #[item(name = "doc.from_boss", version = 1)]
/// struct FromBoss { subject: String }
///
/// impl MailHandler for BossWatch {
///     fn received(&self, tx: &mut Write<'_>, mail: &Stored<InboundMail>) -> Result<(), StoreError> {
///         if mail.from.contains(&self.boss) {
///             tx.insert(&FromBoss { subject: mail.subject.clone() })?;
///         }
///         Ok(())
///     }
/// }
/// powerup!(BossWatch as dyn MailHandler);
/// ```
pub trait MailHandler: Send {
    /// `mail` has arrived (it is in the store, its raw message attached).
    fn received(
        &self,
        tx: &mut mantissa_store::Write<'_>,
        mail: &mantissa_store::Stored<InboundMail>,
    ) -> Result<(), mantissa_store::StoreError>;
}

impl mantissa_store::Interface for dyn MailHandler {
    const NAME: &'static str = "mantissa.mail_handler";
}

/// Local parts at the site's domain that are the site's, not a person's:
/// no account may be called so. `postmaster` and `abuse` (RFC 5321 §4.5.1,
/// RFC 2142) reach the administrator; [`crate::bounces`]'s return paths
/// and [`crate::dmarc::REPORTS`] are processed.
pub const RESERVED_NAMES: &[&str] = &[
    "postmaster",
    "abuse",
    "mailer-daemon",
    mantissa_mail_proto::verp::PREFIX,
    crate::dmarc::REPORTS,
];

/// Those of [`RESERVED_NAMES`] that reach the site's administrator.
pub const TO_ADMINISTRATOR: &[&str] = &["postmaster", "abuse"];

/// The name of the attached file holding the raw message.
pub const RAW_FILE: &str = "message.eml";

/// The most text kept in [`InboundMail::text`].
pub const TEXT_LIMIT: usize = 64 * 1024;

/// Where an address's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Into this user store.
    User(String),
    /// To the bounce processing: one of the site's return paths.
    Bounces,
    /// Out, to another site: from someone logged in on a submission port.
    Elsewhere,
    /// DMARC aggregate reports about the site's domain ([`crate::dmarc`]).
    DmarcReports,
}

/// What [`Recipients::destination`] returns.
pub type DestinationFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Destination>> + Send>>;

/// Who the site receives mail for, and how it delivers.
pub trait Recipients: Send + Sync + 'static {
    /// Where mail to `address` goes; `None`: nobody here (refused at
    /// `RCPT`).
    fn destination(&self, address: &str) -> DestinationFuture;
}

/// What a submission port (587) needs of the site: to log people in
/// without the web, and to send what they submit.
pub trait Submission: Send + Sync + 'static {
    /// The user name of whoever `who` and `password` log in as, from
    /// `peer`; `None` when they do not (failures count towards the site's
    /// log-in back-offs, as on the web).
    fn login(&self, peer: std::net::IpAddr, who: &str, password: &str) -> LoginFuture;

    /// Sends `raw` from `user` (who logged in) as `from` to `to`; `Err`
    /// says why not, in words for the sender.
    fn submit(&self, user: &str, from: &str, to: Vec<String>, raw: Arc<Vec<u8>>) -> SubmitFuture;
}

/// What [`Submission::login`] returns.
pub type LoginFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// What [`Submission::submit`] returns.
pub type SubmitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The session's limits.
#[derive(Debug, Clone)]
pub struct SmtpLimits {
    /// Largest message accepted, in bytes (advertised as `SIZE`).
    pub max_message_bytes: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Unknown recipients after which the session is closed.
    pub max_unknown_recipients: usize,
    /// Commands in one session between two messages delivered (a
    /// session that only talks is closed; one that delivers goes on, for
    /// as long as [`SmtpLimits::session_time`] allows).
    pub max_commands: usize,
    /// A session's total time.
    pub session_time: Duration,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_unknown_recipients: 3,
            max_commands: 1000,
            session_time: Duration::from_secs(600),
        }
    }
}

/// The SMTP protocol of a site: receiving mail for its people (port 25),
/// or, with [`SmtpProtocol::submission`], taking mail from them to send
/// (port 587: TLS and a log-in first).
pub struct SmtpProtocol {
    site: Site,
    hostname: String,
    limits: SmtpLimits,
    recipients: Arc<dyn Recipients>,
    tls: Option<Arc<rustls::ServerConfig>>,
    submission: Option<Arc<dyn Submission>>,
    checks: Option<Arc<mail_auth::MessageAuthenticator>>,
}

impl SmtpProtocol {
    /// SMTP for `site`, greeting as `hostname`, receiving for whom
    /// `recipients` says.
    pub fn new(
        site: Site,
        hostname: impl Into<String>,
        limits: SmtpLimits,
        recipients: Arc<dyn Recipients>,
    ) -> SmtpProtocol {
        SmtpProtocol {
            site,
            hostname: hostname.into(),
            limits,
            recipients,
            tls: None,
            submission: None,
            checks: sender_checks(),
        }
    }

    /// Does not check senders (SPF, DKIM, DMARC): each message is stored
    /// with `none` for all three. For a site behind a mail server that
    /// checks already, or a machine without DNS.
    pub fn without_sender_checks(mut self) -> SmtpProtocol {
        self.checks = None;
        self
    }

    /// Offers STARTTLS (RFC 3207) with this certificate.
    pub fn with_starttls(mut self, tls: Arc<rustls::ServerConfig>) -> SmtpProtocol {
        self.tls = Some(tls);
        self
    }

    /// A submission port: mail is taken only from people logged in (AUTH
    /// PLAIN, offered only once TLS is on), to any recipient, and sent
    /// through `submission`.
    pub fn submission(mut self, submission: Arc<dyn Submission>) -> SmtpProtocol {
        self.submission = Some(submission);
        self
    }
}

impl Protocol for SmtpProtocol {
    fn serve(&self, conn: Connection) -> BoxFuture {
        let session = Session {
            site: self.site.clone(),
            hostname: self.hostname.clone(),
            limits: self.limits.clone(),
            recipients: self.recipients.clone(),
            tls: self.tls.clone(),
            submission: self.submission.clone(),
            checks: self.checks.clone(),
        };
        Box::pin(async move {
            let time = session.limits.session_time;
            let peer = conn.peer;
            if tokio::time::timeout(time, session.run(conn)).await.is_err() {
                tracing::info!(%peer, "SMTP session over its time: closed");
            }
        })
    }

    fn refusal(&self, _: Refusal) -> Option<Vec<u8>> {
        Some(b"421 4.3.2 Too busy, try again later\r\n".to_vec())
    }
}

struct Session {
    site: Site,
    hostname: String,
    limits: SmtpLimits,
    recipients: Arc<dyn Recipients>,
    tls: Option<Arc<rustls::ServerConfig>>,
    submission: Option<Arc<dyn Submission>>,
    checks: Option<Arc<mail_auth::MessageAuthenticator>>,
}

/// The mail transaction under way.
#[derive(Default)]
struct Transaction {
    /// The name the client gave in EHLO or HELO.
    helo: String,
    from: Option<String>,
    to: Vec<(String, Destination)>,
}

impl Transaction {
    /// A new transaction on the same session (the client's name kept).
    fn reset(&self) -> Transaction {
        Transaction {
            helo: self.helo.clone(),
            ..Transaction::default()
        }
    }
}

enum State {
    Command,
    Data {
        receiver: DataReceiver,
        too_big: bool,
    },
    /// After `334`: the AUTH response line, as far as it has come.
    AuthResponse(Vec<u8>),
    /// `220 Ready to start TLS` is being sent; the handshake follows.
    StartTls,
}

impl Session {
    async fn run(self, conn: Connection) {
        let Connection {
            mut io,
            peer,
            requests,
            mut shutdown,
            tls: mut tls_on,
            slot: _slot,
        } = conn;
        let mut out = format!("220 {} ESMTP Mantissa\r\n", self.hostname).into_bytes();
        let mut greeted = false;
        let mut user: Option<String> = None;
        let mut tx = Transaction::default();
        let mut unknown = 0;
        let mut commands = 0;
        let mut state = State::Command;
        let mut parser = RequestReceiver::default();
        let mut message = Vec::new();
        let mut buf = vec![0u8; 8192];
        let mut answering = None;
        // After a line over the length limit: its rest is thrown away up
        // to its end, not read as commands.
        let mut skipping_line = false;
        loop {
            if !out.is_empty() {
                if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                    return;
                }
                out.clear();
                // The answer is out: the head watch waits for the next
                // command (not while a message's data is coming).
                if matches!(state, State::Command | State::AuthResponse(_)) {
                    answering = None;
                }
            }
            if matches!(state, State::StartTls) {
                let Some(config) = self.tls.clone() else {
                    return;
                };
                io = match tokio_rustls::TlsAcceptor::from(config).accept(io).await {
                    Ok(secure) => Box::new(secure),
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "STARTTLS handshake failed");
                        return;
                    }
                };
                // RFC 3207: everything known before is forgotten, and the
                // client says EHLO again.
                tls_on = true;
                greeted = false;
                tx = Transaction::default();
                parser = RequestReceiver::default();
                state = State::Command;
            }
            let n = tokio::select! {
                n = io.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = shutdown.wait() => {
                    let _ = io.write_all(b"421 4.3.2 Shutting down\r\n").await;
                    return;
                }
            };
            let mut bytes = buf[..n].iter();
            while bytes.len() > 0 {
                if skipping_line {
                    let rest = bytes.as_slice();
                    match rest.iter().position(|b| *b == b'\n') {
                        Some(end) => {
                            bytes = rest[end + 1..].iter();
                            skipping_line = false;
                        }
                        None => bytes = [].iter(),
                    }
                    continue;
                }
                match &mut state {
                    State::Data { receiver, too_big } => {
                        let done = receiver.ingest(&mut bytes, &mut message);
                        if message.len() > self.limits.max_message_bytes {
                            *too_big = true;
                            message.clear();
                        }
                        if !done {
                            continue;
                        }
                        let too_big = *too_big;
                        state = State::Command;
                        let reply = if too_big {
                            "552 5.3.4 Message too big\r\n".to_string()
                        } else {
                            let raw = std::mem::take(&mut message);
                            // A session that delivers is working, not
                            // looping: its count of commands starts again.
                            commands = 0;
                            self.deliver(&tx, user.as_deref(), raw, peer).await
                        };
                        message.clear();
                        tx = tx.reset();
                        out.extend_from_slice(reply.as_bytes());
                        continue;
                    }
                    State::AuthResponse(line) => {
                        let rest = bytes.as_slice();
                        let end = rest.iter().position(|b| *b == b'\n');
                        let take = end.map_or(rest.len(), |e| e + 1);
                        line.extend_from_slice(&rest[..take]);
                        bytes = rest[take..].iter();
                        if line.len() > 4096 {
                            out.extend_from_slice(b"500 5.5.6 Line too long\r\n");
                            state = State::Command;
                            skipping_line = end.is_none();
                            continue;
                        }
                        if end.is_none() {
                            continue;
                        }
                        let response = String::from_utf8_lossy(line).trim().to_string();
                        state = State::Command;
                        let reply = self.authenticate(peer, &response, &mut user).await;
                        out.extend_from_slice(reply.as_bytes());
                        continue;
                    }
                    State::Command | State::StartTls => {}
                }
                let request = match parser.ingest(&mut bytes) {
                    Ok(r) => r,
                    Err(ParseError::NeedsMoreData { .. }) => break,
                    Err(e) => {
                        commands += 1;
                        skipping_line = matches!(e, ParseError::ResponseTooLong);
                        out.extend_from_slice(syntax_reply(&e).as_bytes());
                        if commands >= self.limits.max_commands {
                            out.extend_from_slice(b"421 4.7.0 Too many commands\r\n");
                            let _ = io.write_all(&out).await;
                            return;
                        }
                        continue;
                    }
                };
                if answering.is_none() {
                    answering = Some(requests.head_received());
                }
                commands += 1;
                if commands > self.limits.max_commands {
                    out.extend_from_slice(b"421 4.7.0 Too many commands\r\n");
                    let _ = io.write_all(&out).await;
                    return;
                }
                let submission = self.submission.is_some();
                let reply: Cow<'static, str> = match request {
                    Request::Ehlo { host } => {
                        greeted = true;
                        tx = Transaction {
                            helo: host.to_string(),
                            ..Transaction::default()
                        };
                        let mut ehlo = format!(
                            "250-{} greets {host}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n",
                            self.hostname, self.limits.max_message_bytes
                        );
                        if self.tls.is_some() && !tls_on {
                            ehlo.push_str("250-STARTTLS\r\n");
                        }
                        if submission && tls_on && user.is_none() {
                            ehlo.push_str("250-AUTH PLAIN\r\n");
                        }
                        ehlo.push_str("250 SMTPUTF8\r\n");
                        ehlo.into()
                    }
                    Request::Helo { host } | Request::Lhlo { host } => {
                        greeted = true;
                        tx = Transaction {
                            helo: host.to_string(),
                            ..Transaction::default()
                        };
                        format!("250 {} greets {host}\r\n", self.hostname).into()
                    }
                    Request::StartTls => {
                        if self.tls.is_none() || tls_on {
                            "454 4.7.0 TLS not available\r\n".into()
                        } else {
                            // Whatever the client sent after STARTTLS in
                            // the clear is not read (RFC 3207).
                            out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                            state = State::StartTls;
                            break;
                        }
                    }
                    Request::Auth {
                        mechanism,
                        initial_response,
                    } => {
                        if !submission {
                            "502 5.5.1 AUTH is not offered here\r\n".into()
                        } else if !tls_on {
                            "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
                        } else if user.is_some() {
                            "503 5.5.1 Already logged in\r\n".into()
                        } else if mechanism != smtp_proto::AUTH_PLAIN {
                            "504 5.5.4 Only AUTH PLAIN is offered\r\n".into()
                        } else if initial_response.is_empty() {
                            state = State::AuthResponse(Vec::new());
                            "334 \r\n".into()
                        } else {
                            let response = initial_response.to_string();
                            self.authenticate(peer, &response, &mut user).await.into()
                        }
                    }
                    Request::Mail { from } => {
                        if !greeted {
                            "503 5.5.1 Say EHLO first\r\n".into()
                        } else if submission && !tls_on {
                            "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
                        } else if submission && user.is_none() {
                            "530 5.7.0 Authentication required\r\n".into()
                        } else if tx.from.is_some() {
                            "503 5.5.1 A transaction is under way (RSET to start again)\r\n".into()
                        } else if from.size > self.limits.max_message_bytes {
                            format!(
                                "552 5.3.4 Message too big: at most {} bytes\r\n",
                                self.limits.max_message_bytes
                            )
                            .into()
                        } else {
                            tx.from = Some(from.address.to_string());
                            "250 2.1.0 Sender OK\r\n".into()
                        }
                    }
                    Request::Rcpt { to } => {
                        if tx.from.is_none() {
                            "503 5.5.1 MAIL FROM first\r\n".into()
                        } else if tx.to.len() >= self.limits.max_recipients {
                            "452 4.5.3 Too many recipients\r\n".into()
                        } else {
                            let address = to.address.to_string();
                            match self.recipients.destination(&address).await {
                                Some(d) => {
                                    tx.to.push((address, d));
                                    "250 2.1.5 Recipient OK\r\n".into()
                                }
                                // Someone logged in sends anywhere.
                                None if submission && address.contains('@') => {
                                    tx.to.push((address, Destination::Elsewhere));
                                    "250 2.1.5 Recipient OK\r\n".into()
                                }
                                None => {
                                    unknown += 1;
                                    if unknown >= self.limits.max_unknown_recipients {
                                        out.extend_from_slice(
                                            b"550 5.1.1 No such recipient here\r\n421 4.7.0 Too many unknown recipients\r\n",
                                        );
                                        let _ = io.write_all(&out).await;
                                        return;
                                    }
                                    "550 5.1.1 No such recipient here\r\n".into()
                                }
                            }
                        }
                    }
                    Request::Data => {
                        if tx.to.is_empty() {
                            "503 5.5.1 RCPT TO first\r\n".into()
                        } else {
                            state = State::Data {
                                receiver: DataReceiver::new(),
                                too_big: false,
                            };
                            "354 Go ahead, end with <CRLF>.<CRLF>\r\n".into()
                        }
                    }
                    Request::Rset => {
                        tx = tx.reset();
                        "250 2.0.0 OK\r\n".into()
                    }
                    Request::Noop { .. } => "250 2.0.0 OK\r\n".into(),
                    Request::Vrfy { .. } | Request::Expn { .. } => {
                        "252 2.1.5 Send some mail and see\r\n".into()
                    }
                    Request::Quit => {
                        out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                        let _ = io.write_all(&out).await;
                        return;
                    }
                    _ => "502 5.5.1 Command not implemented\r\n".into(),
                };
                out.extend_from_slice(reply.as_bytes());
            }
        }
    }

    /// Checks an AUTH PLAIN response (base64 of `authzid NUL user NUL
    /// password`); logs `user` in when it is right. The reply to send.
    async fn authenticate(
        &self,
        peer: std::net::SocketAddr,
        response: &str,
        user: &mut Option<String>,
    ) -> String {
        use base64::Engine;
        if response == "*" {
            return "501 5.7.0 Authentication cancelled\r\n".into();
        }
        let Some(submission) = &self.submission else {
            return "502 5.5.1 AUTH is not offered here\r\n".into();
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        let Some(decoded) = decoded else {
            return "501 5.5.2 Cannot decode the response\r\n".into();
        };
        let mut parts = decoded.split('\0');
        let (Some(_authzid), Some(who), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return "501 5.5.2 Expected authzid, user and password\r\n".into();
        };
        match submission.login(peer.ip(), who, password).await {
            Some(name) => {
                tracing::info!(%peer, user = %name, "logged in for submission");
                *user = Some(name);
                "235 2.7.0 Authentication successful\r\n".into()
            }
            None => "535 5.7.8 Authentication credentials invalid\r\n".into(),
        }
    }

    /// Delivers a received message to each recipient; the reply to send.
    async fn deliver(
        &self,
        tx: &Transaction,
        user: Option<&str>,
        raw: Vec<u8>,
        peer: std::net::SocketAddr,
    ) -> String {
        let from = tx.from.clone().unwrap_or_default();
        let raw = Arc::new(raw);
        let mut failed = Vec::new();
        // Submitted mail: sent on (every recipient elsewhere at once; the
        // queue makes each its own copy), refused as a whole if it cannot be
        // (the sender not the person logged in, say: asked even when every
        // recipient is here).
        let elsewhere: Vec<String> = tx
            .to
            .iter()
            .filter(|(_, d)| *d == Destination::Elsewhere)
            .map(|(to, _)| to.clone())
            .collect();
        if !elsewhere.is_empty() || self.submission.is_some() {
            let (Some(submission), Some(user)) = (&self.submission, user) else {
                return "550 5.7.1 Relaying denied\r\n".into();
            };
            if let Err(why) = submission
                .submit(user, &from, elsewhere.clone(), raw.clone())
                .await
            {
                tracing::warn!(%peer, user, error = %why, "submitted mail refused");
                return format!("550 5.7.1 {why}\r\n");
            }
            tracing::info!(%peer, user, to = ?elsewhere, size = raw.len(), "mail submitted");
        }
        let checks = if tx.to.iter().any(|(_, d)| matches!(d, Destination::User(_))) {
            self.check_sender(&raw, peer.ip(), &tx.helo, &from).await
        } else {
            SenderChecks::none()
        };
        for (to, destination) in &tx.to {
            let done = match destination {
                Destination::Bounces => crate::bounces::apply(&self.site, &raw, Some(to))
                    .await
                    .map(|effects| {
                        tracing::info!(%peer, to, ?effects, "bounce received");
                    })
                    .map_err(|e| e.to_string()),
                Destination::Elsewhere => Ok(()),
                Destination::DmarcReports => crate::dmarc::receive(&self.site, &raw)
                    .await
                    .map(|r| tracing::info!(%peer, ?r, "DMARC report received"))
                    // A message that is not a report is dropped, not
                    // bounced: nobody reads a bounce to a report sender.
                    .or_else(|e| {
                        tracing::warn!(%peer, error = %e, "mail to the DMARC address dropped");
                        Ok(())
                    }),
                Destination::User(user) => {
                    deliver_to_user(&self.site, user, &from, to, raw.clone(), &checks)
                        .await
                        .map(
                            |()| tracing::info!(%peer, to, user, size = raw.len(), "mail received"),
                        )
                }
            };
            if let Err(e) = done {
                tracing::error!(%peer, to, error = %e, "delivering received mail failed");
                failed.push(to.clone());
            }
        }
        if failed.is_empty() {
            "250 2.0.0 Delivered\r\n".into()
        } else {
            // Some copies may be in; the sender tries again later, and a
            // duplicate is better than a loss.
            format!(
                "451 4.3.0 Could not deliver to {}: try again later\r\n",
                failed.join(", ")
            )
        }
    }
}

/// What the receiving server found of a message's sender.
struct SenderChecks {
    spf: String,
    dkim: String,
    dmarc: String,
    /// The `Authentication-Results` header saying so, to put first in the
    /// stored message; empty when nothing was checked.
    header: String,
}

impl SenderChecks {
    fn none() -> SenderChecks {
        SenderChecks {
            spf: "none".into(),
            dkim: "none".into(),
            dmarc: "none".into(),
            header: String::new(),
        }
    }
}

/// How long the checks of one message may take (DNS lookups).
const CHECK_TIME: Duration = Duration::from_secs(5);

/// The checks' resolver: the system's (resolv.conf), but a lookup waits 2 s
/// once, not hickory's 5 s twice, so that a resolver that does not answer
/// holds a message's delivery 2 s, not 10 (measured: 20 sessions at about
/// 7 messages a second on a machine whose resolver never answers TXT).
/// None found: the checks say `none`.
fn sender_checks() -> Option<Arc<mail_auth::MessageAuthenticator>> {
    use mail_auth::hickory_resolver::system_conf::read_system_conf;
    let made = read_system_conf()
        .map_err(|e| e.to_string())
        .and_then(|(config, mut options)| {
            options.timeout = Duration::from_secs(2);
            options.attempts = 1;
            mail_auth::MessageAuthenticator::new(config, options).map_err(|e| e.to_string())
        });
    match made {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: received mail is not checked (SPF, DKIM, DMARC)");
            None
        }
    }
}

impl Session {
    /// SPF on the envelope sender, DKIM on the signatures and DMARC on the
    /// `From` domain, by `mail-auth`, within [`CHECK_TIME`] (or else each
    /// is `temperror`).
    async fn check_sender(
        &self,
        raw: &[u8],
        ip: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> SenderChecks {
        use mail_auth::common::headers::HeaderWriter;
        use mail_auth::{
            AuthenticatedMessage, AuthenticationResults, DkimResult, SpfResult,
            dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
        };
        let Some(auth) = &self.checks else {
            return SenderChecks::none();
        };
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return SenderChecks::none();
        };
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let checked = tokio::time::timeout(CHECK_TIME, async {
            let dkim = auth.verify_dkim(&message).await;
            let spf = auth
                .verify_spf(SpfParameters::verify_mail_from(
                    ip,
                    helo,
                    &self.hostname,
                    mail_from,
                ))
                .await;
            let from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
            let dmarc = auth
                .verify_dmarc(DmarcParameters::new(&message, &dkim, from_domain, &spf))
                .await;
            let spf_word = match spf.result() {
                SpfResult::Pass => "pass",
                SpfResult::Fail => "fail",
                SpfResult::SoftFail => "softfail",
                SpfResult::Neutral => "neutral",
                SpfResult::TempError => "temperror",
                SpfResult::PermError => "permerror",
                SpfResult::None => "none",
            };
            // The best signature's verdict.
            let rank = |r: &DkimResult| match r {
                DkimResult::Pass => (0, "pass"),
                DkimResult::Neutral(_) => (1, "neutral"),
                DkimResult::Fail(_) => (2, "fail"),
                DkimResult::TempError(_) => (3, "temperror"),
                DkimResult::PermError(_) => (4, "permerror"),
                DkimResult::None => (5, "none"),
            };
            let dkim_word = dkim
                .iter()
                .map(|d| rank(d.result()))
                .min()
                .map_or("none", |(_, w)| w);
            let header = AuthenticationResults::new(&self.hostname)
                .with_dkim_results(&dkim, message.from())
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .with_dmarc_result(&dmarc)
                .to_header();
            SenderChecks {
                spf: spf_word.into(),
                dkim: dkim_word.into(),
                dmarc: dmarc.result().to_string(),
                header,
            }
        })
        .await;
        checked.unwrap_or_else(|_| SenderChecks {
            spf: "temperror".into(),
            dkim: "temperror".into(),
            dmarc: "temperror".into(),
            header: String::new(),
        })
    }
}

/// The reply to a command that does not parse, saying what was wrong.
fn syntax_reply(e: &ParseError) -> String {
    match e {
        ParseError::UnknownCommand => "500 5.5.1 Unknown command\r\n".into(),
        ParseError::InvalidSenderAddress => "501 5.1.7 Bad sender address\r\n".into(),
        ParseError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address\r\n".into(),
        ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n"),
        ParseError::InvalidParameter { param } => format!("501 5.5.4 Bad parameter {param}\r\n"),
        ParseError::UnsupportedParameter { param } => {
            format!(
                "504 5.5.4 Parameter {} not supported\r\n",
                param.chars().take(40).collect::<String>()
            )
        }
        ParseError::ResponseTooLong => "500 5.5.6 Line too long\r\n".into(),
        _ => "500 5.5.2 Syntax error\r\n".into(),
    }
}

/// Puts one received message into `user`'s store.
async fn deliver_to_user(
    site: &Site,
    user: &str,
    envelope_from: &str,
    envelope_to: &str,
    raw: Arc<Vec<u8>>,
    checks: &SenderChecks,
) -> Result<(), String> {
    let store = site.user_store(user).map_err(|e| e.to_string())?;
    let parsed = mail_parser::MessageParser::default().parse(raw.as_slice());
    let (from, subject, message_id, text) = match &parsed {
        Some(m) => (
            m.from()
                .and_then(|a| a.first())
                .map(|a| match (a.name(), a.address()) {
                    (Some(n), Some(addr)) => format!("{n} <{addr}>"),
                    (None, Some(addr)) => addr.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
                .unwrap_or_default(),
            m.subject().unwrap_or_default().to_string(),
            m.message_id().map(str::to_string),
            m.body_text(0)
                .map(|t| cut(&t, TEXT_LIMIT))
                .unwrap_or_default(),
        ),
        None => Default::default(),
    };
    let mut item = InboundMail {
        envelope_from: envelope_from.to_string(),
        envelope_to: envelope_to.to_string(),
        from,
        subject,
        message_id,
        received_at: Timestamp::now(),
        size: raw.len() as i64,
        text,
        spf: checks.spf.clone(),
        dkim: checks.dkim.clone(),
        dmarc: checks.dmarc.clone(),
    };
    // Stored as it arrived, with what this server found first.
    let raw = if checks.header.is_empty() {
        raw
    } else {
        let mut with = checks.header.clone().into_bytes();
        with.extend_from_slice(&raw);
        Arc::new(with)
    };
    item.size = raw.len() as i64;
    let id = store
        .write(move |tx| {
            let id = tx.insert(&item)?;
            tx.attach_file(id, RAW_FILE, &raw)?;
            Ok::<_, mantissa_store::StoreError>(id)
        })
        .await
        .map_err(|e| e.to_string())?;
    hand_to_handlers(&store, id).await;
    Ok(())
}

/// Runs each [`MailHandler`] installed on `store` on the message `id`.
async fn hand_to_handlers(store: &mantissa_store::Store, id: mantissa_store::Ref<InboundMail>) {
    crate::each_powerup::<dyn MailHandler, _>(store, "mail handler", move |handler, tx| {
        match tx.find(id)? {
            Some(mail) => handler.received(tx, &mail),
            None => Ok(()),
        }
    })
    .await
}

/// `s` cut to at most `limit` bytes, at a character's edge.
fn cut(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
