//! What an administrator does to accounts, as methods of [`Accounts`] that
//! the console and the command line both call: approve, suspend and
//! unsuspend, delete, with each action written to the audit log
//! ([`crate::audit`]) under the name of who did it.
//!
//! A refusal (no such account, suspending oneself, approving someone who
//! is not waiting) is [`AccountError::Invalid`] with the reason, and
//! changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use mantissa_store::{Read, StoreError, Stored, Write};
use mantissa_web::SessionRecord;
use serde_json::json;

use crate::audit;
use crate::model::{Account, EmailAddress, status};
use crate::service::{AccountError, Accounts};

/// The account called `name`, or a refusal naming it.
fn named(r: &Read<'_>, name: &str) -> mantissa_store::Result<Stored<Account>> {
    r.query::<Account>()
        .filter(Account::username.eq(name.to_string()))
        .first()?
        .ok_or_else(|| StoreError::app(format!("there is no user called {name:?}")))
}

fn refused(e: StoreError) -> AccountError {
    match e {
        StoreError::App(m) => AccountError::Invalid(m),
        e => AccountError::Store(e),
    }
}

/// What approving an account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// The account works now.
    Active,
    /// It works once its owner verifies their email address.
    NeedsVerifying,
}

impl Accounts {
    async fn write_as<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Write<'_>) -> mantissa_store::Result<T> + Send + 'static,
    ) -> Result<T, AccountError> {
        self.site().store().write(f).await.map_err(refused)
    }

    /// The addresses of `name` (none for an unknown account).
    pub async fn email_addresses(&self, name: &str) -> Result<Vec<String>, AccountError> {
        let n = name.to_string();
        Ok(self
            .site()
            .store()
            .read(move |r| {
                let Some(a) = r
                    .query::<Account>()
                    .filter(Account::username.eq(n))
                    .first()?
                else {
                    return Ok(vec![]);
                };
                r.query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(a.id()))
                    .column(EmailAddress::address)
            })
            .await?)
    }

    /// Approves `name`'s sign-up (it waits for approval), for `actor`, and
    /// mails its owner that it was.
    pub async fn approve(&self, actor: &str, name: &str) -> Result<Approval, AccountError> {
        let (actor, n) = (actor.to_string(), name.to_string());
        let done = self
            .write_as(move |tx| {
                let mut a = named(tx, &n)?;
                if a.status != status::PENDING {
                    return Err(StoreError::app(format!("{n} is not waiting for approval")));
                }
                let verified = tx
                    .query::<EmailAddress>()
                    .filter(EmailAddress::account.eq(a.id()))
                    .filter(EmailAddress::verified.eq(true))
                    .count()?
                    > 0;
                a.status = if verified {
                    status::ACTIVE
                } else {
                    status::UNVERIFIED
                }
                .into();
                tx.update(&a)?;
                audit::record(tx, &actor, "approve", &n, "")?;
                Ok(if verified {
                    Approval::Active
                } else {
                    Approval::NeedsVerifying
                })
            })
            .await?;
        for to in self.email_addresses(name).await? {
            let sent = self
                .mail(
                    &to,
                    "mail/approved.txt",
                    json!({ "username": name, "verified": done == Approval::Active }),
                )
                .await;
            if let Err(e) = sent {
                tracing::error!(user = %name, error = %e, "mail that the account was approved not sent");
            }
        }
        Ok(done)
    }

    /// Suspends `name`, for `actor` (not themself): their sessions end at
    /// once and their API tokens are revoked for good (unsuspending does
    /// not bring those back).
    pub async fn suspend(&self, actor: &str, name: &str) -> Result<(), AccountError> {
        let (actor, n) = (actor.to_string(), name.to_string());
        self.write_as(move |tx| {
            if n == actor {
                return Err(StoreError::app("you cannot suspend yourself"));
            }
            let mut a = named(tx, &n)?;
            if a.status == status::SUSPENDED {
                return Err(StoreError::app(format!("{n} is suspended already")));
            }
            a.status = status::SUSPENDED.into();
            tx.update(&a)?;
            tx.delete_where(SessionRecord::user.eq(n.clone()))?;
            crate::tokens::revoke_all(tx, a.id())?;
            audit::record(tx, &actor, "suspend", &n, "")
        })
        .await
    }

    /// Lets `name` log in again after a suspension, for `actor`.
    pub async fn unsuspend(&self, actor: &str, name: &str) -> Result<(), AccountError> {
        let (actor, n) = (actor.to_string(), name.to_string());
        self.write_as(move |tx| {
            let mut a = named(tx, &n)?;
            if a.status != status::SUSPENDED {
                return Err(StoreError::app(format!("{n} is not suspended")));
            }
            a.status = status::ACTIVE.into();
            tx.update(&a)?;
            audit::record(tx, &actor, "unsuspend", &n, "")
        })
        .await
    }

    /// Deletes `name` and its store for `actor` (not themself), after
    /// exporting the store (see [`Accounts::delete_user`]); returns the
    /// export's path.
    pub async fn delete_account(
        self: &Arc<Self>,
        actor: &str,
        name: &str,
    ) -> Result<PathBuf, AccountError> {
        if name == actor {
            return Err(AccountError::Invalid("you cannot delete yourself".into()));
        }
        let n = name.to_string();
        self.site()
            .store()
            .read(move |r| named(r, &n).map(|_| ()))
            .await
            .map_err(refused)?;
        let (me, n) = (self.clone(), name.to_string());
        let export = tokio::task::spawn_blocking(move || me.delete_user(&n))
            .await
            .map_err(|e| AccountError::Invalid(e.to_string()))??;
        self.audit(
            actor,
            "delete",
            name,
            &format!("exported to {}", export.display()),
        )
        .await?;
        Ok(export)
    }

    /// Writes an entry in the audit log: `actor` did `action` to `target`.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), AccountError> {
        let (actor, action, target, detail) = (
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            detail.to_string(),
        );
        self.write_as(move |tx| audit::record(tx, &actor, &action, &target, &detail))
            .await
    }
}
