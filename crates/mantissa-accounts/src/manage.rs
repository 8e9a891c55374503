//! What an administrator does to accounts outside the sign-up and log-in
//! flows — list them, look at one, approve, suspend, unsuspend, delete, set
//! a password, give an imported store its account — as methods on
//! [`Accounts`] that the admin console and the command line both call, so
//! that both do the same thing. Each action that changes an account is
//! written to the audit log ([`crate::audit`]) under the name of who did it,
//! in the same transaction where it is one.
//!
//! Refusals are [`AccountError::Invalid`], with a message for people that
//! names the account ("bob is not suspended"), and change nothing.

use std::path::PathBuf;
use std::sync::Arc;

use mantissa_store::{Stored, Timestamp, Write};
use mantissa_web::SessionRecord;
use serde_json::json;

use crate::audit;
use crate::model::{Account, EmailAddress, purpose, status};
use crate::passkeys::Passkey;
use crate::service::{
    AccountError, Accounts, check_username, end_links, insert_created_account, issue_ticket,
    normalize_email,
};
use crate::tokens::ApiToken;

/// An account, as an administrator's list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserSummary {
    /// The user name.
    pub username: String,
    /// One of [`status`].
    pub status: String,
    /// Whether the account administers the site.
    pub admin: bool,
    /// Its email addresses, and whether each was verified.
    pub emails: Vec<EmailSummary>,
    /// When it was created.
    #[serde(serialize_with = "rfc3339")]
    pub created: Timestamp,
}

/// An email address of an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EmailSummary {
    /// The address.
    pub address: String,
    /// Whether its owner proved it.
    pub verified: bool,
}

/// One account in full, for `mantissa user show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserDetails {
    /// What the list shows.
    #[serde(flatten)]
    pub summary: UserSummary,
    /// How it joined: `open`, `invitation`, `approval` or `created`.
    pub joined_by: String,
    /// Whether it has a password (an account made without one has none
    /// until its link is followed).
    pub has_password: bool,
    /// Whether log-in asks for a two-factor code.
    pub two_factor: bool,
    /// Its passkeys.
    pub passkeys: u64,
    /// Its API tokens not revoked.
    pub api_tokens: u64,
    /// Its sessions not ended.
    pub sessions: u64,
}

fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// What approving an account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// The account works now.
    Active,
    /// It works once its owner verifies their email address.
    NeedsVerifying,
}

/// "there is no user called \"bob\"", for an account looked for by name.
fn no_such_user(name: &str) -> AccountError {
    AccountError::Invalid(format!("there is no user called {name:?}"))
}

/// The account called `name`, or [`no_such_user`].
fn find(r: &mantissa_store::Read<'_>, name: &str) -> Result<Stored<Account>, AccountError> {
    r.query::<Account>()
        .filter(Account::username.eq(name))
        .first()?
        .ok_or_else(|| no_such_user(name))
}

fn summary(
    r: &mantissa_store::Read<'_>,
    a: &Stored<Account>,
) -> mantissa_store::Result<UserSummary> {
    let emails = r
        .query::<EmailAddress>()
        .filter(EmailAddress::account.eq(a.id()))
        .all()?
        .into_iter()
        .map(|e| EmailSummary {
            address: e.address.clone(),
            verified: e.verified,
        })
        .collect();
    Ok(UserSummary {
        username: a.username.clone(),
        status: a.status.clone(),
        admin: a.admin,
        emails,
        created: a.created,
    })
}

impl Accounts {
    /// Every account, by user name.
    pub fn users(&self) -> Result<Vec<UserSummary>, AccountError> {
        Ok(self
            .site()
            .store()
            .read_blocking(|r| -> mantissa_store::Result<_> {
                let mut emails: std::collections::HashMap<i64, Vec<EmailSummary>> =
                    std::collections::HashMap::new();
                for e in r.query::<EmailAddress>().all()? {
                    emails
                        .entry(e.account.id())
                        .or_default()
                        .push(EmailSummary {
                            address: e.address.clone(),
                            verified: e.verified,
                        });
                }
                Ok(r.query::<Account>()
                    .order_by(Account::username.asc())
                    .all()?
                    .into_iter()
                    .map(|a| UserSummary {
                        emails: emails.remove(&a.id().id()).unwrap_or_default(),
                        username: a.username.clone(),
                        status: a.status.clone(),
                        admin: a.admin,
                        created: a.created,
                    })
                    .collect())
            })?)
    }

    /// The account called `username`, in full.
    pub fn user_details(&self, username: &str) -> Result<UserDetails, AccountError> {
        let name = username.to_string();
        self.site().store().read_blocking(|r| {
            let a = find(r, &name)?;
            let now = Timestamp::now();
            Ok(UserDetails {
                summary: summary(r, &a)?,
                joined_by: a.joined_by.clone(),
                has_password: a.password_hash.is_some(),
                two_factor: a.totp_enabled,
                passkeys: r
                    .query::<Passkey>()
                    .filter(Passkey::account.eq(a.id()))
                    .count()?,
                api_tokens: r
                    .query::<ApiToken>()
                    .filter(ApiToken::account.eq(a.id()))
                    .filter(ApiToken::revoked.eq(false))
                    .count()?,
                sessions: r
                    .query::<SessionRecord>()
                    .filter(SessionRecord::user.eq(name.clone()))
                    .filter(SessionRecord::expires.gt(now))
                    .count()?,
            })
        })
    }

    /// Sets the password of `username` (an administrator's action: the
    /// owner forgot it, or it is the administrator's own): unlocks the
    /// account, ends its sessions and its outstanding password, email and
    /// unlock links. API tokens and two-factor log-in stay as they were.
    pub fn set_password(&self, username: &str, password: &str) -> Result<(), AccountError> {
        crate::password::check_new(password)
            .map_err(|e| AccountError::Invalid(format!("password: {e}")))?;
        // Checked before the (slow) hash, and again when written.
        self.site()
            .store()
            .read_blocking(|r| find(r, username).map(drop))?;
        let hash = crate::password::hash(password);
        let name = username.to_string();
        self.site()
            .store()
            .write_blocking(move |tx| -> Result<_, AccountError> {
                let mut a = find(tx, &name)?;
                a.password_hash = Some(hash);
                a.locked = false;
                a.failed_logins = 0;
                tx.update(&a)?;
                end_links(tx, a.id())?;
                tx.delete_where(SessionRecord::user.eq(name.clone()))?;
                Ok(())
            })?;
        tracing::info!(user = %username, "password set by an administrator");
        Ok(())
    }

    /// A one-time link (working for a day) with which the owner of
    /// `username` sets a new password, as a reset link would, but handed to
    /// the administrator instead of mailed. Earlier links for the account
    /// stop working.
    pub fn password_link(&self, username: &str) -> Result<String, AccountError> {
        let name = username.to_string();
        let token = self
            .site()
            .store()
            .write_blocking(move |tx| -> Result<_, AccountError> {
                let a = find(tx, &name)?;
                end_links(tx, a.id())?;
                Ok(issue_ticket(tx, purpose::PASSWORD, Some(a.id()), None)?)
            })?;
        Ok(format!("{}/reset/{token}", self.base_url()))
    }

    /// Makes an active account for a user store that exists already (one
    /// imported with `mantissa user import`), without a password: returns
    /// the one-time link for setting it. The store keeps what it holds: the
    /// product of new accounts is not installed in it again.
    pub fn create_account_for_store(
        &self,
        username: &str,
        email: Option<&str>,
    ) -> Result<String, AccountError> {
        check_username(username)?;
        if !self.site().has_user_store(username)? {
            return Err(AccountError::Invalid(format!(
                "there is no user store called {username:?}"
            )));
        }
        let email = email.map(normalize_email).transpose()?;
        let name = username.to_string();
        let token = self
            .site()
            .store()
            .write_blocking(move |tx| -> Result<_, AccountError> {
                let account = insert_created_account(tx, name, email.clone(), None, false, true)?;
                Ok(issue_ticket(tx, purpose::PASSWORD, Some(account), email)?)
            })?;
        tracing::info!(user = %username, "account made for an imported store");
        Ok(format!("{}/reset/{token}", self.base_url()))
    }

    /// Whether there is an account called `username`.
    pub fn has_account(&self, username: &str) -> Result<bool, AccountError> {
        let name = username.to_string();
        Ok(self
            .site()
            .store()
            .read_blocking(move |r| crate::service::username_taken(r, &name))?)
    }

    async fn write_as<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Write<'_>) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        self.site().store().write(f).await
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
                let mut a = find(tx, &n)?;
                if a.status != status::PENDING {
                    return Err(AccountError::Invalid(format!(
                        "{n} is not waiting for approval (the account is {})",
                        a.status
                    )));
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
                return Err(AccountError::Invalid("you cannot suspend yourself".into()));
            }
            let mut a = find(tx, &n)?;
            if a.status == status::SUSPENDED {
                return Err(AccountError::Invalid(format!("{n} is suspended already")));
            }
            a.status = status::SUSPENDED.into();
            tx.update(&a)?;
            tx.delete_where(SessionRecord::user.eq(n.clone()))?;
            crate::tokens::revoke_all(tx, a.id())?;
            Ok(audit::record(tx, &actor, "suspend", &n, "")?)
        })
        .await
    }

    /// Lets `name` log in again after a suspension, for `actor`.
    pub async fn unsuspend(&self, actor: &str, name: &str) -> Result<(), AccountError> {
        let (actor, n) = (actor.to_string(), name.to_string());
        self.write_as(move |tx| {
            let mut a = find(tx, &n)?;
            if a.status != status::SUSPENDED {
                return Err(AccountError::Invalid(format!(
                    "{n} is not suspended (the account is {})",
                    a.status
                )));
            }
            a.status = status::ACTIVE.into();
            tx.update(&a)?;
            Ok(audit::record(tx, &actor, "unsuspend", &n, "")?)
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
            .read(move |r| find(r, &n).map(|_| ()))
            .await?;
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
        self.write_as(move |tx| Ok(audit::record(tx, &actor, &action, &target, &detail)?))
            .await
    }
}
