//! Interstore messages: one store asks another for something, reliably.
//!
//! User stores never share tables; when one needs another (a mail delivered
//! to a user, a share granted, a call answered), it sends a [`Message`]. The
//! message is written to the sender's outbox in the sender's transaction;
//! the site delivers it to the target store, where [`Message::receive`] runs
//! in the target's transaction and its answer is recorded beside a
//! deduplication key; the answer then goes back to the sender's
//! [`Message::answered`]. Each step is a transaction and a crash between
//! them only repeats a delivery that the key recognises, so a message is
//! received exactly once and answered exactly once, across restarts.
//!
//! The key is the sender store's identity (random, made with the store and
//! never repeated) and the message's number in its outbox — not the
//! sender's name: a user store deleted and made again under the same name
//! numbers its messages from 1 again, and is a new sender. A store imported
//! from an export ([`Site::import_user`]) gets a new identity too, so the
//! messages still waiting in its outbox are delivered again rather than
//! taken for ones already received (a restored store cannot know which its
//! receivers have).
//!
//! ```
//! use mantissa_store::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { n: i64 }
//!
//! impl Message for Ping {
//!     const NAME: &'static str = "doc.ping";
//!     type Answer = i64;
//!     type Error = StoreError;
//!     fn receive(self, _tx: &mut Write<'_>, _from: &str) -> Result<i64> {
//!         Ok(self.n + 1)
//!     }
//! }
//! message!(Ping);
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path()).unwrap();
//! let (alice, _bob) = (site.user_store("alice").unwrap(), site.user_store("bob").unwrap());
//! let id = alice.write_blocking(|tx| tx.send_message("bob", &Ping { n: 41 })).unwrap();
//! site.run_due(Timestamp::now()).unwrap();
//! let answer = alice.read_blocking(move |r| r.message_answer::<Ping>(id)).unwrap();
//! assert_eq!(answer, Some(42));
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Failure, Result, StoreError};
use crate::scheduler::backoff;
use crate::site::Site;
use crate::store::Store;
use crate::tx::{Read, Write};
use crate::value::{Timestamp, Value};

/// The name that addresses the site store in [`Write::send_message`].
pub const SITE_STORE: &str = "@site";

/// Delivery attempts before a message is marked failed.
const MAX_ATTEMPTS: i64 = 10;

/// A message one store sends another. Register with
/// [`message!`](crate::message).
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// A stable name for the message type.
    const NAME: &'static str;
    /// What the receiver answers.
    type Answer: Serialize + DeserializeOwned + Send + 'static;
    /// What the handlers' failures are: the store only logs them and keeps
    /// their text, so the implementor's own type serves.
    type Error: From<StoreError> + std::fmt::Display;
    /// Handles the message in a transaction of the receiving store. `from`
    /// is the sender's store name. An error is retried later, with backoff.
    fn receive(self, tx: &mut Write<'_>, from: &str) -> Result<Self::Answer, Self::Error>;
    /// Handles the answer in a transaction of the sending store. The
    /// answer is recorded whatever this returns: an error is logged, and
    /// this is not called again for that message.
    fn answered(
        tx: &mut Write<'_>,
        id: MessageId,
        answer: Self::Answer,
    ) -> Result<(), Self::Error> {
        let _ = (tx, id, answer);
        Ok(())
    }
}

/// Who a store is, as the sender of messages.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Random, made with the store, never repeated (`_meta` key `id`).
    pub(crate) id: String,
    /// The last message sent before the store had an identity (format 1):
    /// its receivers know those by the store's name.
    pub(crate) legacy_outbox: i64,
}

/// A sent message, in its sender's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub i64);

/// Where a sent message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Not delivered yet.
    Pending {
        /// Failed attempts so far.
        attempts: u32,
        /// The last failure.
        last_error: Option<String>,
    },
    /// Received and answered (the answer as JSON).
    Answered(String),
    /// Given up on.
    Failed(String),
}

type Receiver = fn(&mut Write<'_>, &str, &str) -> Result<String, Failure>;
type AnswerHandler = fn(&mut Write<'_>, MessageId, &str) -> Result<(), Failure>;

fn receive_one<M: Message>(tx: &mut Write<'_>, from: &str, body: &str) -> Result<String, Failure> {
    let msg: M = serde_json::from_str(body).map_err(|e| format_error::<M>(false, false, e))?;
    let answer = msg.receive(tx, from).map_err(Failure::of)?;
    serde_json::to_string(&answer).map_err(|e| format_error::<M>(true, true, e).into())
}

fn answer_one<M: Message>(tx: &mut Write<'_>, id: MessageId, answer: &str) -> Result<(), Failure> {
    let a: M::Answer =
        serde_json::from_str(answer).map_err(|e| format_error::<M>(true, false, e))?;
    M::answered(tx, id, a).map_err(Failure::of)
}

fn format_error<M: Message>(answer: bool, writing: bool, e: serde_json::Error) -> StoreError {
    StoreError::MessageFormat {
        message: M::NAME,
        answer,
        writing,
        reason: e.to_string(),
    }
}

/// Submitted by [`message!`](crate::message); not for hand use.
#[doc(hidden)]
pub struct MessageRegistration {
    name: &'static str,
    receive: Receiver,
    answered: AnswerHandler,
}

impl MessageRegistration {
    #[doc(hidden)]
    pub const fn of<M: Message>() -> Self {
        MessageRegistration {
            name: M::NAME,
            receive: receive_one::<M>,
            answered: answer_one::<M>,
        }
    }
}

inventory::collect!(MessageRegistration);

/// Registers a [`Message`] type.
#[macro_export]
macro_rules! message {
    ($msg:ty) => {
        $crate::__private::inventory::submit! {
            $crate::__private::MessageRegistration::of::<$msg>()
        }
    };
}

fn registrations() -> &'static HashMap<&'static str, &'static MessageRegistration> {
    static MAP: OnceLock<HashMap<&'static str, &'static MessageRegistration>> = OnceLock::new();
    MAP.get_or_init(|| {
        inventory::iter::<MessageRegistration>
            .into_iter()
            .map(|r| (r.name, r))
            .collect()
    })
}

impl Write<'_> {
    /// Sends `msg` to the store `to` (a user name, or [`SITE_STORE`]). It is
    /// delivered after this transaction commits, by the site.
    pub fn send_message<M: Message>(&mut self, to: &str, msg: &M) -> Result<MessageId> {
        if to != SITE_STORE {
            crate::site::check_store_name(to)?;
        }
        let body = serde_json::to_string(msg).map_err(|e| format_error::<M>(false, true, e))?;
        let now = Timestamp::now();
        crate::schema::Internal::Outbox.ensure(self.conn())?;
        let id = self.conn().insert(
            "INSERT INTO _outbox (target, kind, body, state, next_try) VALUES (?, ?, ?, 'pending', ?)",
            &[
                Value::Text(to.into()),
                Value::Text(M::NAME.into()),
                Value::Text(body.into()),
                Value::Integer(now.as_micros()),
            ],
        )?;
        self.note_work_at(now);
        Ok(MessageId(id))
    }
}

impl Read<'_> {
    /// Where a message this store sent is.
    pub fn message_state(&self, id: MessageId) -> Result<Option<MessageState>> {
        let row = self.conn().rows(
            "SELECT state, answer, attempts, last_error FROM _outbox WHERE id = ?",
            &[Value::Integer(id.0)],
        )?;
        let Some(row) = row.into_iter().next() else {
            return Ok(None);
        };
        let mut it = row.into_iter();
        let text = |v: Option<Value<'static>>| match v {
            Some(Value::Text(t)) => Some(t.into_owned()),
            _ => None,
        };
        let state = text(it.next()).unwrap_or_default();
        let answer = text(it.next());
        let attempts = match it.next() {
            Some(Value::Integer(i)) => i as u32,
            _ => 0,
        };
        let last_error = text(it.next());
        Ok(Some(match state.as_str() {
            "answered" => MessageState::Answered(answer.unwrap_or_default()),
            "failed" => MessageState::Failed(last_error.unwrap_or_default()),
            _ => MessageState::Pending {
                attempts,
                last_error,
            },
        }))
    }

    /// The answer to a message this store sent, once it has come.
    pub fn message_answer<M: Message>(&self, id: MessageId) -> Result<Option<M::Answer>> {
        match self.message_state(id)? {
            Some(MessageState::Answered(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| format_error::<M>(true, false, e)),
            _ => Ok(None),
        }
    }
}

struct Outgoing {
    id: i64,
    target: String,
    kind: String,
    body: String,
    attempts: i64,
}

impl Site {
    fn store_named(&self, name: &str) -> Result<Option<Store>> {
        if name == SITE_STORE {
            Ok(Some(self.store().clone()))
        } else {
            self.existing_user_store(name)
        }
    }

    /// Delivers the messages `sender` has waiting; returns how many were
    /// answered and when the next retry is due.
    pub(crate) fn deliver_from(
        &self,
        sender: &Store,
        sender_name: &str,
        now: Timestamp,
    ) -> Result<(usize, Option<Timestamp>)> {
        let pending: Vec<Outgoing> = sender.read_blocking(|r| -> Result<_> {
            Ok(r.conn()
                .rows(
                    "SELECT id, target, kind, body, attempts FROM _outbox
                     WHERE state = 'pending' AND next_try <= ? ORDER BY id LIMIT 500",
                    &[Value::Integer(now.as_micros())],
                )?
                .into_iter()
                .filter_map(|row| {
                    let mut it = row.into_iter();
                    let (
                        Some(Value::Integer(id)),
                        Some(Value::Text(target)),
                        Some(Value::Text(kind)),
                        Some(Value::Text(body)),
                        Some(Value::Integer(attempts)),
                    ) = (it.next(), it.next(), it.next(), it.next(), it.next())
                    else {
                        return None;
                    };
                    Some(Outgoing {
                        id,
                        target: target.into_owned(),
                        kind: kind.into_owned(),
                        body: body.into_owned(),
                        attempts,
                    })
                })
                .collect())
        })?;
        let mut answered = 0;
        for m in pending {
            let outcome = self.deliver_one(&m, sender_name, sender.identity());
            let sender_name_owned = sender_name.to_string();
            let done = sender.write_blocking(move |tx| -> Result<_> {
                match outcome {
                    Ok(answer) => {
                        let changed = tx.conn().execute(
                            "UPDATE _outbox SET state = 'answered', answer = ?, last_error = NULL
                             WHERE id = ? AND state = 'pending'",
                            &[Value::Text(answer.clone().into()), Value::Integer(m.id)],
                        )?;
                        if changed > 0
                            && let Some(reg) = registrations().get(m.kind.as_str())
                        {
                            let handled = tx.savepoint(|tx| {
                                crate::store::caught(|| (reg.answered)(tx, MessageId(m.id), &answer))
                            });
                            if let Err(e) = handled {
                                tracing::warn!(store = %sender_name_owned, message = m.id, error = %e, "handling an answer failed; the answer is kept");
                            }
                        }
                        Ok(true)
                    }
                    Err((e, permanent)) => {
                        let attempts = m.attempts + 1;
                        let give_up = permanent || attempts >= MAX_ATTEMPTS;
                        tracing::warn!(store = %sender_name_owned, message = m.id, to = %m.target, attempts, error = %e, "message delivery failed");
                        tx.conn().execute(
                            "UPDATE _outbox SET state = ?, attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                            &[
                                Value::Text(if give_up { "failed" } else { "pending" }.into()),
                                Value::Integer(attempts),
                                Value::Integer(now.plus(backoff(attempts as u32)).as_micros()),
                                Value::Text(e.to_string().into()),
                                Value::Integer(m.id),
                            ],
                        )?;
                        Ok(false)
                    }
                }
            })?;
            if done {
                answered += 1;
            }
        }
        let next = sender.read_blocking(|r| -> Result<_> {
            Ok(
                match r.conn().scalar(
                    "SELECT MIN(next_try) FROM _outbox WHERE state = 'pending'",
                    &[],
                )? {
                    Some(Value::Integer(i)) => Some(Timestamp::from_micros(i)),
                    _ => None,
                },
            )
        })?;
        Ok((answered, next))
    }

    /// Delivers one message to its target; the error says whether retrying
    /// can help.
    fn deliver_one(
        &self,
        m: &Outgoing,
        sender: &str,
        sender_identity: &Identity,
    ) -> Result<String, (Failure, bool)> {
        let Some(reg) = registrations().get(m.kind.as_str()) else {
            return Err((StoreError::UnknownType(m.kind.clone()).into(), true));
        };
        let target = match self.store_named(&m.target) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err((StoreError::NoSuchStore(m.target.clone()).into(), true));
            }
            Err(e) => return Err((e.into(), false)),
        };
        let id = m.id;
        // Messages sent before the sender had an identity are known to
        // their receivers by its name.
        let legacy = (id <= sender_identity.legacy_outbox).then(|| format!("name:{sender}"));
        target
            .write_blocking(|tx| {
                let seen = tx.conn().scalar(
                    "SELECT answer FROM _inbox WHERE message_id = ? AND sender_id IN (?, ?)",
                    &[
                        Value::Integer(id),
                        Value::Text(sender_identity.id.as_str().into()),
                        legacy
                            .as_deref()
                            .map_or(Value::Null, |l| Value::Text(l.into())),
                    ],
                )?;
                if let Some(Value::Text(answer)) = seen {
                    return Ok(answer.into_owned());
                }
                let answer =
                    tx.savepoint(|tx| crate::store::caught(|| (reg.receive)(tx, sender, &m.body)))?;
                crate::schema::Internal::Inbox.ensure(tx.conn())?;
                tx.conn().execute(
                    "INSERT INTO _inbox (sender_id, message_id, answer) VALUES (?, ?, ?)",
                    &[
                        Value::Text(sender_identity.id.as_str().into()),
                        Value::Integer(id),
                        Value::Text(answer.clone().into()),
                    ],
                )?;
                Ok(answer)
            })
            .map_err(|e| (e, false))
    }
}
