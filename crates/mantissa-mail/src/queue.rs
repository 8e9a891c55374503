//! The persistent outbound queue: every message the site sends is first an
//! item in the site store ([`QueuedMail`]), and [`MailQueue::send`] returns
//! once that item is committed, so a message accepted is never lost, even
//! to `kill -9`. The queue's runner then delivers due messages through the
//! relay, retries temporary failures (4xx replies, refused connections,
//! timeouts) with exponential backoff for a while (5 days by default), gives
//! up at once on a permanent one (a 5xx reply to the message), and records
//! each attempt's outcome on the item.
//!
//! Why the queue runs its own timer on its items rather than the store's
//! [`Scheduled`](mantissa_store::Scheduled) entries: a scheduled run happens
//! inside a write transaction of its store, and an SMTP conversation (up to
//! a timeout of minutes on a slow relay) held inside the site store's write
//! would stall every log-in and session write behind it. So the queue keeps
//! the store's way of working — due work found by an indexed time, claimed
//! in a write under the store's write lock, so that one process only sends
//! it, with a lease that hands it back if that process dies mid-send — and
//! talks SMTP between two short writes. Delivery is therefore at least once:
//! a crash after the relay's 250 and before the outcome is written sends the
//! message again when the lease ends.
//!
//! Messages due together for one destination share connections (each
//! connection sends its share one after another), and no more than
//! [`QueueSettings::per_destination`] connections to one destination are
//! open at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mantissa_store::{Item, Site, StoreError, Stored, Timestamp, Write};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{MailError, MailFuture, Mailer, OutgoingMail, SmtpRelay};

/// How long delivered messages are kept, as the delivery history.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long stopping the runner waits for its round to finish.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// How often the runner forgets old delivered messages.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A message in the queue, kept in the site store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.queued_mail", version = 2)]
pub struct QueuedMail {
    /// The envelope sender: a VERP return path naming this message and
    /// its recipient ([`crate::bounces`]) when the recipient can be
    /// carried in one, or else the sender's address.
    pub sender: String,
    /// The envelope recipients, one per line (one since version 2: each
    /// recipient's copy is a message of its own, with its own return path).
    pub recipients: String,
    /// The subject, for listings (the message itself is in `message`).
    pub subject: String,
    /// The message as sent, RFC 5322 bytes, rendered once when queued so
    /// that every attempt sends the same bytes.
    pub message: Vec<u8>,
    /// Where it goes: the relay's `host:port`.
    pub destination: String,
    /// `queued`, `sending`, `delivered` or `failed` (see [`MailState`]).
    #[item(index)]
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When `send` queued it.
    pub queued_at: Timestamp,
    /// When the current run of retries began (the queuing, or the last
    /// retry an operator asked for): giving up counts from here.
    pub retrying_since: Timestamp,
    /// When it is next tried (for `sending`, when its lease ends); none
    /// once delivered or failed.
    #[item(index)]
    pub next_try: Option<Timestamp>,
    /// When it was last tried.
    pub last_try: Option<Timestamp>,
    /// What went wrong last time.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    pub finished_at: Option<Timestamp>,
    /// The tag its VERP return path carries (random letters and digits:
    /// a bounce cannot be forged for a message by guessing it), by which a
    /// bounce finds it; none when it has a plain return path.
    #[item(index)]
    pub bounce_tag: Option<String>,
}

// Version 2: `bounce_tag`. Messages queued before have plain return paths.
mantissa_store::upgrader!(QueuedMail, 1, |item| {
    item.set("bounce_tag", None::<String>);
    Ok(())
});

/// Where a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailState {
    /// Waiting for its next try.
    Queued,
    /// Claimed by a runner that is talking to the relay.
    Sending,
    /// Accepted by the relay.
    Delivered,
    /// Given up: a permanent failure, or temporary ones for too long.
    Failed,
}

impl MailState {
    /// Its name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MailState::Queued => "queued",
            MailState::Sending => "sending",
            MailState::Delivered => "delivered",
            MailState::Failed => "failed",
        }
    }
}

impl QueuedMail {
    /// `mail`, rendered as `message` (by [`crate::render_signed`] or
    /// [`crate::render`]), to be sent through `destination` from `now` on.
    pub fn new(
        mail: &OutgoingMail,
        message: Vec<u8>,
        destination: String,
        now: Timestamp,
    ) -> Result<QueuedMail, MailError> {
        Ok(QueuedMail {
            sender: mail.from.clone(),
            recipients: mail.to.join("\n"),
            subject: mail.subject.clone(),
            message,
            destination,
            state: MailState::Queued.as_str().into(),
            attempts: 0,
            queued_at: now,
            retrying_since: now,
            next_try: Some(now),
            last_try: None,
            last_error: None,
            finished_at: None,
            bounce_tag: None,
        })
    }

    /// Its state (an unknown stored name reads as queued, so it is tried).
    pub fn mail_state(&self) -> MailState {
        match self.state.as_str() {
            "sending" => MailState::Sending,
            "delivered" => MailState::Delivered,
            "failed" => MailState::Failed,
            _ => MailState::Queued,
        }
    }

    /// The envelope recipients.
    pub fn recipient_list(&self) -> Vec<&str> {
        self.recipients.lines().filter(|l| !l.is_empty()).collect()
    }
}

/// How the queue retries.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// The wait after the first temporary failure; it doubles after each.
    pub first_retry: Duration,
    /// The longest wait between two tries.
    pub max_retry: Duration,
    /// How long temporary failures are retried before giving up.
    pub give_up_after: Duration,
    /// How long a claimed message is left to its runner before another
    /// may take it (longer than the SMTP timeouts of one delivery).
    pub lease: Duration,
    /// Connections open at once to one destination.
    pub per_destination: usize,
    /// Messages claimed in one round.
    pub batch: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            first_retry: Duration::from_secs(60),
            max_retry: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(5 * 24 * 3600),
            lease: Duration::from_secs(600),
            per_destination: 4,
            batch: 500,
        }
    }
}

impl QueueSettings {
    /// The wait after the `attempts`-th failure.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let doublings = attempts.clamp(1, 30) as u32 - 1;
        self.first_retry
            .checked_mul(1u32 << doublings.min(20))
            .unwrap_or(self.max_retry)
            .min(self.max_retry)
    }
}

/// What one [`MailQueue::run_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueRun {
    /// Messages the relay accepted.
    pub delivered: usize,
    /// Messages that failed for now and wait for another try.
    pub deferred: usize,
    /// Messages given up.
    pub failed: usize,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Delivered,
    /// Worth trying again: a 4xx reply, a connection refused or dropped, a
    /// timeout.
    Temporary(String),
    /// Never worth trying again: a 5xx reply to this message.
    Permanent(String),
}

/// The outbound queue: a [`Mailer`] whose `send` queues, and the runner
/// that delivers what is due through the relay.
#[derive(Clone)]
pub struct MailQueue {
    inner: Arc<Inner>,
}

struct Inner {
    site: Site,
    relay: SmtpRelay,
    settings: QueueSettings,
    /// Rung when a message is queued, so that the runner sends it now
    /// rather than at its next tick.
    wake: tokio::sync::Notify,
}

impl MailQueue {
    /// A queue in `site`'s store, delivering through `relay`.
    pub fn new(site: Site, relay: SmtpRelay, settings: QueueSettings) -> MailQueue {
        MailQueue {
            inner: Arc::new(Inner {
                site,
                relay,
                settings,
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// Queues one message, a copy for each recipient (each with a VERP
    /// return path of its own: [`crate::bounces`]); returns their ids, in
    /// the order of `mail.to`, once they are committed. (Unlike
    /// [`Mailer::send`], it does not look at who unsubscribed.)
    pub async fn enqueue(&self, mail: OutgoingMail) -> Result<Vec<i64>, MailError> {
        let message = crate::render_signed(&mail, &self.inner.site).await?;
        self.enqueue_rendered(&mail, message).await
    }

    /// Queues a whole message (RFC 5322 bytes) someone submitted, from
    /// `from` to `to`, signed as the site's own mail is (when it has a
    /// DKIM key for `from`'s domain), as [`MailQueue::enqueue`] does.
    pub async fn enqueue_raw(
        &self,
        from: &str,
        to: Vec<String>,
        raw: Vec<u8>,
    ) -> Result<Vec<i64>, MailError> {
        let subject = mail_parser::MessageParser::default()
            .parse_headers(raw.as_slice())
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default();
        let message = crate::sign_as_sender(&self.inner.site, from, raw).await?;
        let mail = OutgoingMail {
            from: from.to_string(),
            to,
            subject,
            text: String::new(),
            html: None,
            unsubscribe: None,
        };
        self.enqueue_rendered(&mail, message).await
    }

    /// Queues `message`, rendered from `mail`: a copy for each recipient.
    async fn enqueue_rendered(
        &self,
        mail: &OutgoingMail,
        message: Vec<u8>,
    ) -> Result<Vec<i64>, MailError> {
        let now = Timestamp::now();
        let mut items = Vec::with_capacity(mail.to.len());
        for to in &mail.to {
            let one = OutgoingMail {
                to: vec![to.clone()],
                ..mail.clone()
            };
            let mut item = QueuedMail::new(&one, message.clone(), self.inner.relay.address(), now)?;
            if let Some((tag, path)) = crate::bounces::return_path(&mail.from, to) {
                item.sender = path;
                item.bounce_tag = Some(tag);
            } else {
                item.sender = crate::bounces::bare_address(&mail.from).to_string();
            }
            items.push(item);
        }
        let ids = self
            .inner
            .site
            .store()
            .write(move |tx| -> Result<Vec<i64>, StoreError> {
                items.iter().map(|item| Ok(tx.insert(item)?.id())).collect()
            })
            .await?;
        tracing::info!(ids = ?ids, to = ?mail.to, subject = %mail.subject, "mail queued");
        self.inner.wake.notify_one();
        Ok(ids)
    }

    /// Claims every message due at `now` (up to a batch) and tries to
    /// deliver it; records each outcome. Returns what happened.
    pub async fn run_due(&self, now: Timestamp) -> Result<QueueRun, MailError> {
        let mut run = QueueRun::default();
        loop {
            let claimed = self.claim(now).await?;
            if claimed.is_empty() {
                return Ok(run);
            }
            let n = claimed.len();
            let round = self.deliver(claimed, now).await?;
            run.delivered += round.delivered;
            run.deferred += round.deferred;
            run.failed += round.failed;
            if (n as u64) < self.inner.settings.batch {
                return Ok(run);
            }
        }
    }

    /// Marks due messages as being sent by this runner, until the lease
    /// ends; returns them.
    async fn claim(&self, now: Timestamp) -> Result<Vec<Stored<QueuedMail>>, MailError> {
        let lease = now.plus(self.inner.settings.lease);
        let batch = self.inner.settings.batch;
        // Looked at with a read first: the runner comes by every few
        // seconds, and an idle site should not take its store's write lock
        // (on PostgreSQL, a transaction on the server) each time.
        let store = self.inner.site.store();
        let any_due = store
            .read(move |r| {
                r.query::<QueuedMail>()
                    .filter(QueuedMail::next_try.le(now))
                    .limit(1)
                    .column(QueuedMail::next_try)
                    .map(|due| !due.is_empty())
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        Ok(store
            .write(move |tx| -> Result<_, StoreError> {
                let due = tx
                    .query::<QueuedMail>()
                    .filter(QueuedMail::next_try.le(now))
                    .order_by(QueuedMail::next_try.asc())
                    .limit(batch)
                    .all()?;
                let mut claimed = Vec::with_capacity(due.len());
                for mut m in due {
                    m.state = MailState::Sending.as_str().into();
                    m.next_try = Some(lease);
                    tx.update(&m)?;
                    claimed.push(m);
                }
                Ok(claimed)
            })
            .await?)
    }

    /// Delivers claimed messages, per destination, over at most
    /// `per_destination` connections each.
    async fn deliver(
        &self,
        claimed: Vec<Stored<QueuedMail>>,
        now: Timestamp,
    ) -> Result<QueueRun, MailError> {
        // Mail to an address that bounced for good, or complained, is not
        // sent (crate::bounces): given up at once, saying why.
        let (suppressed, claimed) = crate::bounces::suppressed(&self.inner.site, claimed).await?;
        let mut run = QueueRun::default();
        if !suppressed.is_empty() {
            let (share, outcomes) = suppressed
                .into_iter()
                .map(|(m, why)| (m, Outcome::Permanent(why)))
                .unzip();
            run = self.record(share, outcomes, now).await?;
        }
        let mut by_destination: BTreeMap<String, Vec<Stored<QueuedMail>>> = BTreeMap::new();
        for m in claimed {
            by_destination
                .entry(m.destination.clone())
                .or_default()
                .push(m);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, messages) in by_destination {
            let k = self.inner.settings.per_destination.max(1);
            let mut shares: Vec<Vec<Stored<QueuedMail>>> = (0..k).map(|_| Vec::new()).collect();
            for (i, m) in messages.into_iter().enumerate() {
                shares[i % k].push(m);
            }
            for share in shares.into_iter().filter(|s| !s.is_empty()) {
                let queue = self.clone();
                tasks.spawn(async move {
                    let outcomes = queue.inner.relay.deliver_all(&share).await;
                    queue.record(share, outcomes, now).await
                });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            let r =
                joined.map_err(|e| MailError::Build(format!("a delivery task failed: {e}")))??;
            run.delivered += r.delivered;
            run.deferred += r.deferred;
            run.failed += r.failed;
        }
        Ok(run)
    }

    /// Writes each attempt's outcome on its message.
    async fn record(
        &self,
        share: Vec<Stored<QueuedMail>>,
        outcomes: Vec<Outcome>,
        now: Timestamp,
    ) -> Result<QueueRun, MailError> {
        let settings = self.inner.settings.clone();
        let ids: Vec<_> = share.iter().map(|m| m.id()).collect();
        let log: Vec<(i64, String, Outcome)> = share
            .iter()
            .zip(&outcomes)
            .map(|(m, o)| (m.id().id(), m.recipients.replace('\n', ", "), o.clone()))
            .collect();
        let run = self
            .inner
            .site
            .store()
            .write(move |tx| -> Result<_, StoreError> {
                let mut run = QueueRun::default();
                for (id, outcome) in ids.into_iter().zip(outcomes) {
                    // Dropped by an operator while it was being sent.
                    let Some(mut m) = tx.find(id)? else { continue };
                    apply(&mut m, outcome, now, &settings, &mut run);
                    tx.update(&m)?;
                }
                Ok(run)
            })
            .await?;
        for (id, to, outcome) in log {
            match outcome {
                Outcome::Delivered => tracing::info!(id, to, "mail delivered"),
                Outcome::Temporary(e) => tracing::warn!(id, to, error = %e, "mail deferred"),
                Outcome::Permanent(e) => tracing::error!(id, to, error = %e, "mail failed"),
            }
        }
        Ok(run)
    }

    /// Runs the queue in the background: at once when a message is
    /// queued, when the next retry is due, and every `tick` (so that mail
    /// queued by another process is seen), until stopped.
    pub fn spawn(&self, tick: Duration) -> QueueRunner {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let queue = self.clone();
        let handle = tokio::spawn(async move {
            let mut purged: Option<Timestamp> = None;
            loop {
                let now = Timestamp::now();
                let mut failed = queue.run_due(now).await.err();
                if purged.is_none_or(|p| now.since(p) > PURGE_EVERY) {
                    purged = Some(now);
                    failed = failed.or(queue.purge_delivered(now).await.err());
                }
                if let Some(e) = &failed {
                    tracing::error!(error = %e, "running the mail queue failed");
                }
                let wait = match queue.next_due().await {
                    // Not at once after a failure: the store may be down.
                    _ if failed.is_some() => tick,
                    Ok(Some(at)) => at.since(Timestamp::now()).min(tick),
                    _ => tick,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = queue.inner.wake.notified() => {}
                    _ = stopped.changed() => break,
                }
            }
        });
        QueueRunner { stop, handle }
    }

    /// Forgets the messages delivered more than [`KEEP_DELIVERED`] before
    /// `now` (failed ones stay until an operator drops them: they are what
    /// the operator must see).
    pub async fn purge_delivered(&self, now: Timestamp) -> Result<usize, MailError> {
        let Some(before) = now
            .as_micros()
            .checked_sub(KEEP_DELIVERED.as_micros() as i64)
        else {
            return Ok(0);
        };
        let before = Timestamp::from_micros(before);
        Ok(self
            .inner
            .site
            .store()
            .write(move |tx| {
                tx.delete_where(
                    QueuedMail::state
                        .eq(MailState::Delivered.as_str())
                        .and(QueuedMail::finished_at.lt(before)),
                )
            })
            .await?)
    }

    /// When the next message is due.
    async fn next_due(&self) -> Result<Option<Timestamp>, MailError> {
        Ok(self
            .inner
            .site
            .store()
            .read(|r| r.query::<QueuedMail>().min(QueuedMail::next_try))
            .await?)
    }
}

/// Applies one attempt's outcome to its message.
fn apply(
    m: &mut QueuedMail,
    outcome: Outcome,
    now: Timestamp,
    settings: &QueueSettings,
    run: &mut QueueRun,
) {
    m.attempts += 1;
    m.last_try = Some(now);
    let give_up = |m: &mut QueuedMail, why: String, run: &mut QueueRun| {
        m.state = MailState::Failed.as_str().into();
        m.next_try = None;
        m.finished_at = Some(now);
        m.last_error = Some(why);
        run.failed += 1;
    };
    match outcome {
        Outcome::Delivered => {
            m.state = MailState::Delivered.as_str().into();
            m.next_try = None;
            m.finished_at = Some(now);
            m.last_error = None;
            run.delivered += 1;
        }
        Outcome::Permanent(e) => give_up(m, e, run),
        Outcome::Temporary(e) => {
            let next = now.plus(settings.backoff(m.attempts));
            if next.since(m.retrying_since) > settings.give_up_after {
                let days = settings.give_up_after.as_secs_f64() / 86400.0;
                give_up(
                    m,
                    format!("{e} (given up after {days:.3} days of temporary failures)"),
                    run,
                );
            } else {
                m.state = MailState::Queued.as_str().into();
                m.next_try = Some(next);
                m.last_error = Some(e);
                run.deferred += 1;
            }
        }
    }
}

impl Mailer for MailQueue {
    /// Queues the message: returns once it is durably in the site store.
    /// Bulk mail to an address that left its list is not queued (and the
    /// log says so, [`crate::unsubscribe`]).
    fn send(&self, mail: OutgoingMail) -> MailFuture {
        let queue = self.clone();
        Box::pin(async move {
            match crate::unsubscribe::without_unsubscribed(&queue.inner.site, mail).await? {
                Some(mail) => queue.enqueue(mail).await.map(drop),
                None => Ok(()),
            }
        })
    }
}

/// The queue running in the background; stop it for a clean shutdown.
pub struct QueueRunner {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl QueueRunner {
    /// Stops after the current round, waiting for it [`STOP_WAIT`] at
    /// most: a relay that does not answer must not hold a server's shutdown
    /// for its timeouts. A round cut short leaves its messages claimed;
    /// they are tried again when their lease ends.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut handle = self.handle;
        if tokio::time::timeout(STOP_WAIT, &mut handle).await.is_err() {
            tracing::warn!(
                "the mail queue's round did not finish in time; its messages are tried again after their lease"
            );
            handle.abort();
        }
    }
}

/// The queue running on a thread of its own (with its own runtime), for a
/// host that is not async; stops when dropped.
pub struct QueueThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MailQueue {
    /// Runs the queue as [`MailQueue::spawn`] does, on a thread of its own.
    pub fn run_in_thread(&self, tick: Duration) -> std::io::Result<QueueThread> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let queue = self.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("mail-queue".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let runner = queue.spawn(tick);
                    let _ = stopped.await;
                    runner.stop().await;
                })
            })?;
        Ok(QueueThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for QueueThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The queue as an operator sees it (`mantissa mail queue`).
pub mod admin {
    use super::*;
    use mantissa_store::Ref;

    /// The messages in the queue that are waiting, being sent or failed
    /// (with `delivered`, the delivered ones too): unfinished ones first,
    /// then oldest first.
    pub async fn list(site: &Site, delivered: bool) -> Result<Vec<Stored<QueuedMail>>, MailError> {
        let mut all = site
            .store()
            .read(move |r| {
                let q = r.query::<QueuedMail>();
                if delivered {
                    q.all()
                } else {
                    q.filter(QueuedMail::state.ne(MailState::Delivered.as_str()))
                        .all()
                }
            })
            .await?;
        all.sort_by_key(|m| (m.finished_at.is_some(), m.id().id()));
        Ok(all)
    }

    /// The `limit` messages delivered last, the latest first: the delivery
    /// history (kept for [`KEEP_DELIVERED`]).
    pub async fn delivered(site: &Site, limit: u64) -> Result<Vec<Stored<QueuedMail>>, MailError> {
        Ok(site
            .store()
            .read(move |r| {
                r.query::<QueuedMail>()
                    .filter(QueuedMail::state.eq(MailState::Delivered.as_str()))
                    .order_by(QueuedMail::finished_at.desc())
                    .limit(limit)
                    .all()
            })
            .await?)
    }

    /// Message `id`, if it is in the queue.
    pub async fn message(site: &Site, id: i64) -> Result<Option<Stored<QueuedMail>>, MailError> {
        Ok(site
            .store()
            .read(move |r| r.find(Ref::<QueuedMail>::from_id(id)))
            .await?)
    }

    /// How many messages are due now or being sent: none means that the
    /// queue has done all it can for the moment.
    pub async fn due_now(site: &Site) -> Result<u64, MailError> {
        let now = Timestamp::now();
        Ok(site
            .store()
            .read(move |r| {
                r.query::<QueuedMail>()
                    .filter(
                        QueuedMail::next_try
                            .le(now)
                            .or(QueuedMail::state.eq(MailState::Sending.as_str())),
                    )
                    .count()
            })
            .await?)
    }

    /// Makes message `id` due now (a queued one, or a failed one, whose
    /// retries start again; one being sent is left to its runner).
    pub async fn retry(site: &Site, id: i64) -> Result<(), MailError> {
        site.store()
            .write(move |tx| -> Result<_, MailError> {
                let mut m = tx
                    .find(Ref::<QueuedMail>::from_id(id))?
                    .ok_or(MailError::NoSuchMessage { id })?;
                match m.mail_state() {
                    MailState::Delivered => return Err(MailError::AlreadyDelivered { id }),
                    // Its runner has it; its lease brings it back if it dies.
                    MailState::Sending => return Ok(()),
                    MailState::Queued | MailState::Failed => {}
                }
                retry_now(tx, &mut m)
            })
            .await
    }

    fn retry_now(tx: &mut Write<'_>, m: &mut Stored<QueuedMail>) -> Result<(), MailError> {
        let now = Timestamp::now();
        if m.mail_state() == MailState::Failed {
            m.retrying_since = now;
            m.finished_at = None;
        }
        m.state = MailState::Queued.as_str().into();
        m.next_try = Some(now);
        tx.update(m)?;
        Ok(())
    }

    /// Makes every queued and failed message due now; returns how many.
    pub async fn retry_all(site: &Site) -> Result<usize, MailError> {
        site.store()
            .write(|tx| -> Result<_, MailError> {
                let waiting = tx
                    .query::<QueuedMail>()
                    .filter(
                        QueuedMail::state
                            .is_in([MailState::Queued.as_str(), MailState::Failed.as_str()]),
                    )
                    .all()?;
                let n = waiting.len();
                for mut m in waiting {
                    retry_now(tx, &mut m)?;
                }
                Ok(n)
            })
            .await
    }

    /// Takes message `id` out of the queue, whatever its state.
    pub async fn drop_message(site: &Site, id: i64) -> Result<(), MailError> {
        site.store()
            .write(move |tx| -> Result<_, MailError> {
                let r = Ref::<QueuedMail>::from_id(id);
                tx.find(r)?.ok_or(MailError::NoSuchMessage { id })?;
                tx.delete(r)?;
                Ok(())
            })
            .await
    }
}

impl SmtpRelay {
    /// The relay's `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends `messages` one after another over one connection (a new one
    /// after a connection-level failure); returns each one's outcome, in
    /// order.
    async fn deliver_all(&self, messages: &[Stored<QueuedMail>]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(messages.len());
        while outcomes.len() < messages.len() {
            let rest = &messages[outcomes.len()..];
            let done = match self.open().await {
                Ok(crate::RelaySession::Tls(c)) => deliver_on(*c, rest).await,
                Ok(crate::RelaySession::Plain(c)) => deliver_on(c, rest).await,
                Err(why) => vec![session_failure(&why)],
            };
            let connection_failed = done.len() == 1 && matches!(done[0], Outcome::Temporary(_));
            let first = done.first().cloned();
            outcomes.extend(done);
            if connection_failed && outcomes.len() < messages.len() {
                // The relay is down or refuses us: the rest fare no better
                // now; they wait for their next try like this one.
                if let Some(o) = first {
                    outcomes.resize(messages.len(), o);
                }
            }
        }
        outcomes
    }
}

/// What a failure to open the session (connect, greeting, EHLO, TLS, AUTH)
/// is for each message: temporary, even for a 5xx reply, because it says
/// nothing about the message and everything about the relay or its
/// settings, which an operator can fix within the retry time.
fn session_failure(e: &str) -> Outcome {
    Outcome::Temporary(format!("connecting to the relay: {e}"))
}

/// What a failure while sending one message is: permanent for a 5xx reply
/// to that message, temporary for anything else.
fn message_failure(e: &mail_send::Error) -> Outcome {
    match e {
        mail_send::Error::UnexpectedReply(r) if r.code >= 500 => {
            Outcome::Permanent(format!("{} {}", r.code, r.message))
        }
        mail_send::Error::UnexpectedReply(r) => {
            Outcome::Temporary(format!("{} {}", r.code, r.message))
        }
        e => Outcome::Temporary(e.to_string()),
    }
}

/// Sends messages on one open session until one fails in a way that leaves
/// the session unusable; returns the outcomes of those it tried.
async fn deliver_on<T: AsyncRead + AsyncWrite + Unpin>(
    mut client: mail_send::SmtpClient<T>,
    messages: &[Stored<QueuedMail>],
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for m in messages {
        let message = mail_send::smtp::message::Message::new(
            m.sender.as_str(),
            m.recipient_list(),
            m.message.as_slice(),
        );
        match client.send(message).await {
            Ok(_) => outcomes.push(Outcome::Delivered),
            Err(e) => {
                let reply = matches!(e, mail_send::Error::UnexpectedReply(_));
                outcomes.push(message_failure(&e));
                // After a refusal the session is sound once reset; after
                // anything else (a dropped connection, a timeout) it is
                // not, and the next message gets a new one.
                if !reply || client.rset().await.is_err() {
                    return outcomes;
                }
            }
        }
    }
    let _ = client.quit().await;
    outcomes
}
