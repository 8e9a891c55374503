//! API tokens for the JSON API (mobile apps and scripts): created and
//! revoked by their user, scoped (`read`, or `read` and `write`), and stored
//! as a hash — the token itself is shown once, when it is made.

use mantissa_store::{Item, Ref, Site, StoreError, Timestamp, Write};
use mantissa_web::{TokenAuth, TokenFuture, WRITE_SCOPE, random_token};

use crate::model::{Account, status};
use crate::service::{AccountError, hash_token};

/// An API token.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.api_token", version = 1)]
pub struct ApiToken {
    /// SHA-256 of the token, hex.
    #[item(unique)]
    pub token_hash: String,
    /// Whose it is.
    #[item(on_delete = "cascade")]
    pub account: Ref<Account>,
    /// What its user called it ("phone", "backup script").
    pub name: String,
    /// `read` or `read,write`.
    pub scopes: String,
    /// When it was made.
    pub created: Timestamp,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Makes a token for `username`; returns it (shown once).
pub fn create(
    site: &Site,
    username: &str,
    name: &str,
    write: bool,
) -> Result<String, AccountError> {
    let token = format!("mt_{}", random_token());
    let (user, name, hash) = (
        username.to_string(),
        name.trim().to_string(),
        hash_token(&token),
    );
    if name.is_empty() || name.len() > 100 {
        return Err(AccountError::Invalid(
            "give the token a name of 1 to 100 characters".into(),
        ));
    }
    site.store()
        .write_blocking(move |tx| -> Result<_, AccountError> {
            let account = tx
                .query::<Account>()
                .filter(Account::username.eq(user))
                .first()?
                .ok_or_else(|| AccountError::Invalid("no such account".into()))?;
            tx.insert(&ApiToken {
                token_hash: hash,
                account: account.id(),
                name,
                scopes: if write { "read,write" } else { "read" }.into(),
                created: Timestamp::now(),
                revoked: false,
            })?;
            Ok(())
        })?;
    Ok(token)
}

/// The tokens of `username` that are not revoked: (id, name, scopes).
pub fn list(site: &Site, username: &str) -> Result<Vec<(i64, String, String)>, StoreError> {
    let user = username.to_string();
    site.store().read_blocking(move |r| {
        let Some(account) = r
            .query::<Account>()
            .filter(Account::username.eq(user))
            .first()?
        else {
            return Ok(vec![]);
        };
        Ok(r.query::<ApiToken>()
            .filter(ApiToken::account.eq(account.id()))
            .filter(ApiToken::revoked.eq(false))
            .all()?
            .into_iter()
            .map(|t| (t.id().id(), t.name.clone(), t.scopes.clone()))
            .collect())
    })
}

/// Revokes token `id` of `username`; true if it was theirs.
pub fn revoke(site: &Site, username: &str, id: i64) -> Result<bool, StoreError> {
    let user = username.to_string();
    site.store().write_blocking(move |tx| {
        let Some(mut t) = tx.find(Ref::<ApiToken>::from_id(id))? else {
            return Ok(false);
        };
        let owner = tx.get(t.account)?;
        if owner.username != user {
            return Ok(false);
        }
        t.revoked = true;
        tx.update(&t)?;
        Ok(true)
    })
}

/// Revokes every token of `account`, for good (at a password reset, and
/// when an administrator suspends the account). Inside a transaction.
pub(crate) fn revoke_all(tx: &mut Write<'_>, account: Ref<Account>) -> Result<(), StoreError> {
    let open = tx
        .query::<ApiToken>()
        .filter(ApiToken::account.eq(account))
        .filter(ApiToken::revoked.eq(false))
        .all()?;
    for mut t in open {
        t.revoked = true;
        tx.update(&t)?;
    }
    Ok(())
}

/// Authenticates bearer tokens for the web layer.
pub struct TokenAuthenticator {
    site: Site,
}

impl TokenAuthenticator {
    /// Tokens of `site`.
    pub fn new(site: Site) -> Self {
        TokenAuthenticator { site }
    }
}

impl TokenAuth for TokenAuthenticator {
    fn authenticate(&self, token: String) -> TokenFuture {
        let store = self.site.store().clone();
        Box::pin(async move {
            let hash = hash_token(&token);
            store
                .read(move |r| -> mantissa_store::Result<_> {
                    let Some(t) = r
                        .query::<ApiToken>()
                        .filter(ApiToken::token_hash.eq(hash))
                        .first()?
                    else {
                        return Ok(None);
                    };
                    let a = r.get(t.account)?;
                    // Not `a.locked`: failed passwords (anyone's) must not
                    // cut off the owner's scripts.
                    if t.revoked || a.status != status::ACTIVE {
                        return Ok(None);
                    }
                    let scopes = t.scopes.split(',').map(str::to_string).collect::<Vec<_>>();
                    debug_assert!(scopes.iter().all(|s| s == "read" || s == WRITE_SCOPE));
                    Ok(Some((a.username.clone(), scopes)))
                })
                .await
                .ok()
                .flatten()
        })
    }
}
