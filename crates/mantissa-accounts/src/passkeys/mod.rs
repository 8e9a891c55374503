//! Passkeys (WebAuthn): signing in with a key that the person's device (its
//! screen lock, a phone, a security key) keeps, instead of a password.
//!
//! It owns the passkey items, the two ceremonies (adding a passkey, and
//! signing in with one) and their JSON endpoints (module `http`). The browser
//! side is `static/passkeys.js`, served with the settings offering's static
//! files.
//!
//! The cryptography is `webauthn-rs` (kanidm's): it checks origins,
//! challenges, signatures, counters and user verification, and is what
//! DESIGN.md names for second factors. Its 0.6 line is pure Rust (no
//! OpenSSL). Two of its features are on: `danger-allow-state-serialisation`,
//! because a ceremony spans two HTTP requests and its state must wait in the
//! site store between them, and `conditional-ui`, for sign-in with
//! discoverable credentials.
//!
//! Decisions:
//!
//! - **Sign-in needs no user name.** Passkeys are made discoverable
//!   (`residentKey: required`), so "Sign in with a passkey" asks the
//!   browser for any passkey of this site, and the one chosen names its
//!   account (by its credential id, and the account's user handle). This
//!   also says nothing about which user names exist.
//! - **A passkey sign-in is a full log-in**: it skips the password and the
//!   two-factor code. A passkey is already two factors (the device, and
//!   the screen lock or PIN that unlocks it), and user verification is
//!   required in both ceremonies.
//! - **It passes the same checks as a password log-in**: asking for a
//!   sign-in challenge counts against the per-address limit, and a signed
//!   answer against the per-account limit; a locked, unverified, pending or
//!   suspended account is refused (after the passkey is verified, as a
//!   password is checked before them); a new session id is issued. A
//!   passkey that fails to verify does not count towards locking the
//!   account: it cannot be guessed like a password.
//! - **State stays on the server.** A ceremony's state (its challenge)
//!   waits in a [`PasskeyChallenge`] item in the site store, named by a
//!   random id of which only the hash is kept; the browser holds only that
//!   id. It expires after [`CHALLENGE_LIFETIME`] and works once: it is
//!   deleted when an answer arrives, whether or not the answer verifies.
//!   A request that cannot even be read (bad JSON) changes nothing.
//! - **The relying party is the site's base URL**: its host is the RP id,
//!   and its origin the only origin accepted. Browsers allow WebAuthn only
//!   at a domain name (never an IP address) over https, or at
//!   `http://localhost`; at any other address the pages say why passkeys
//!   are not offered.
//! - Adding or removing a passkey needs the signed-in person (not an API
//!   token), and is logged, as is every sign-in with one.

pub(crate) mod http;

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use mantissa_store::{Item, Ref, StoreError, Stored, Timestamp, Write};
use mantissa_web::random_token;
use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey as Credential, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::model::Account;
use crate::service::{AccountError, Accounts, hash_token, may_log_in};

/// How long a ceremony's challenge can be answered.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(300);
/// Passkeys one account may have.
pub const MAX_PASSKEYS: u64 = 20;

/// A passkey of an account, in the site store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.passkey", version = 1)]
pub struct Passkey {
    /// The credential's id (base64url): how the authenticator names it.
    #[item(unique)]
    pub credential_id: String,
    /// Whose it is.
    #[item(on_delete = "cascade")]
    pub account: Ref<Account>,
    /// The account's WebAuthn user handle (a UUID), as the authenticator
    /// keeps it; the same for all of an account's passkeys.
    pub user_handle: String,
    /// What its owner called it ("laptop", "phone").
    pub name: String,
    /// webauthn-rs's `Passkey`, as JSON: public key, algorithm, counter.
    pub credential: Value,
    /// When it was added.
    pub created: Timestamp,
    /// When it last signed in, if it has.
    pub last_used: Option<Timestamp>,
}

/// The two ceremonies.
pub mod ceremony {
    /// Adding a passkey to a signed-in account.
    pub const REGISTER: &str = "register";
    /// Signing in with a passkey.
    pub const SIGN_IN: &str = "sign-in";
}

/// A ceremony waiting for the browser's answer: webauthn-rs's state for it
/// (the challenge), named by a random id that only the browser has.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.passkey_challenge", version = 1)]
pub struct PasskeyChallenge {
    /// SHA-256 of the id given to the browser, hex.
    #[item(unique)]
    pub id_hash: String,
    /// One of [`ceremony`].
    pub ceremony: String,
    /// The account adding a passkey (none for a sign-in).
    #[item(on_delete = "cascade")]
    pub account: Option<Ref<Account>>,
    /// The name for the passkey being added.
    pub name: String,
    /// The user handle the passkey being added gets.
    pub user_handle: String,
    /// webauthn-rs's ceremony state, as JSON.
    pub state: Value,
    /// When it stops working.
    #[item(index)]
    pub expires: Timestamp,
}

/// A passkey as its owner's settings page lists it.
#[derive(Debug, Clone)]
pub struct PasskeySummary {
    /// The item's id (for removing it).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// When it was added.
    pub created: Timestamp,
    /// When it last signed in.
    pub last_used: Option<Timestamp>,
}

/// Why a passkey ceremony failed. Messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// Passkeys cannot work at the site's address; says why.
    #[error("{0}")]
    Unavailable(String),
    /// The request was not acceptable; the message names what was wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The challenge is unknown, was used, or has expired.
    #[error("this passkey request has expired or was already used; please try again")]
    Expired,
    /// Sign-in with a passkey this site does not know (or no longer).
    #[error(
        "this passkey is not registered on this site (it may have been removed); log in with your password"
    )]
    Unknown,
    /// The authenticator's answer did not verify; the message says what
    /// can be done.
    #[error("{0}")]
    Refused(String),
    /// The account's own checks: rate limits, locked, suspended, the store.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// Something broke inside (a stored passkey that cannot be read, …);
    /// logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for PasskeyError {
    fn from(e: StoreError) -> Self {
        PasskeyError::Account(AccountError::Store(e))
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The relying party of a site reached at `base_url`, named `rp_name` in
/// the browser's dialogs; or why there can be none.
pub fn relying_party(base_url: &str, rp_name: &str) -> Result<Webauthn, PasskeyError> {
    let unavailable = |why: &str| {
        PasskeyError::Unavailable(format!(
            "Passkeys cannot be used at this site's address, {base_url}: {why}."
        ))
    };
    let url = Url::parse(base_url).map_err(|_| unavailable("it is not a URL"))?;
    let Some(host) = url.domain() else {
        return Err(unavailable(
            "browsers allow passkeys only at a domain name (like example.org or localhost), never at an IP address",
        ));
    };
    let local = host == "localhost" || host.ends_with(".localhost");
    if url.scheme() != "https" && !(url.scheme() == "http" && local) {
        return Err(unavailable(
            "browsers allow passkeys only over https (or at http://localhost)",
        ));
    }
    let origin = Url::parse(&url.origin().ascii_serialization())
        .map_err(|_| unavailable("it has no origin"))?;
    WebauthnBuilder::new(host, &origin)
        .map(|b| {
            if rp_name.is_empty() {
                b
            } else {
                b.rp_name(rp_name)
            }
        })
        .and_then(|b| b.build())
        .map_err(|e| unavailable(&format!("webauthn-rs refused it ({e})")))
}

/// Starts a ceremony: keeps its state for [`CHALLENGE_LIFETIME`] and
/// returns the id that names it. Challenges that expired are swept away.
fn keep_challenge(
    tx: &mut Write<'_>,
    ceremony: &str,
    account: Option<Ref<Account>>,
    name: String,
    user_handle: String,
    state: Value,
) -> mantissa_store::Result<String> {
    let now = Timestamp::now();
    tx.delete_where(PasskeyChallenge::expires.lt(now))?;
    let id = random_token();
    tx.insert(&PasskeyChallenge {
        id_hash: hash_token(&id),
        ceremony: ceremony.into(),
        account,
        name,
        user_handle,
        state,
        expires: now.plus(CHALLENGE_LIFETIME),
    })?;
    Ok(id)
}

/// Takes the challenge named `id` for `ceremony` (and `account`, if it is
/// one of an account): deleted, so it works once. Inside a transaction; an
/// error rolls the deletion back, so that a challenge that is someone
/// else's still works for them (and an expired one waits for the sweep).
fn take_challenge(
    tx: &mut Write<'_>,
    id: &str,
    ceremony: &str,
    account: Option<Ref<Account>>,
) -> Result<Stored<PasskeyChallenge>, PasskeyError> {
    let c = tx
        .query::<PasskeyChallenge>()
        .filter(PasskeyChallenge::id_hash.eq(hash_token(id)))
        .first()?
        .ok_or(PasskeyError::Expired)?;
    tx.delete(c.id())?;
    if c.ceremony != ceremony || c.account != account || c.expires < Timestamp::now() {
        return Err(PasskeyError::Expired);
    }
    Ok(c)
}

/// Why an answer did not verify, for the person.
fn refused(e: WebauthnError, base_url: &str) -> PasskeyError {
    match e {
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => {
            PasskeyError::Refused(format!(
                "this page was not opened at the site's own address; open {base_url} and try again"
            ))
        }
        WebauthnError::UserNotVerified => PasskeyError::Refused(
            "the passkey did not check that it is you (no screen lock or PIN); try again, or use another passkey".into(),
        ),
        _ => PasskeyError::Refused("the passkey's answer could not be verified; please try again".into()),
    }
}

impl Accounts {
    /// Whether passkeys can work at the site's address (see
    /// [`relying_party`]); the message says why not.
    pub fn passkeys_available(&self) -> Result<(), PasskeyError> {
        relying_party(&self.base_url(), "").map(drop)
    }

    /// The passkeys of `username`, oldest first.
    pub async fn passkeys(&self, username: &str) -> Result<Vec<PasskeySummary>, AccountError> {
        let name = username.to_string();
        Ok(self
            .site()
            .store()
            .read(move |r| {
                let Some(account) = r
                    .query::<Account>()
                    .filter(Account::username.eq(name))
                    .first()?
                else {
                    return Ok(Vec::new());
                };
                r.query::<Passkey>()
                    .filter(Passkey::account.eq(account.id()))
                    .order_by(Passkey::created.asc())
                    .all()
            })
            .await?
            .into_iter()
            .map(|p| PasskeySummary {
                id: p.id().id(),
                name: p.name.clone(),
                created: p.created,
                last_used: p.last_used,
            })
            .collect())
    }

    /// Starts adding a passkey called `name` to `username`: the options for
    /// `navigator.credentials.create()`, and the id of the ceremony.
    pub async fn passkey_register_begin(
        &self,
        username: &str,
        name: &str,
        rp_name: &str,
    ) -> Result<(String, Value), PasskeyError> {
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(PasskeyError::BadRequest(
                "give the passkey a name of 1 to 100 characters".into(),
            ));
        }
        let webauthn = relying_party(&self.base_url(), rp_name)?;
        let user = username.to_string();
        let (account, existing) = self
            .site()
            .store()
            .read(move |r| -> Result<_, PasskeyError> {
                let a = r
                    .query::<Account>()
                    .filter(Account::username.eq(user))
                    .first()?
                    .ok_or_else(|| PasskeyError::BadRequest("no such account".into()))?;
                let keys = r
                    .query::<Passkey>()
                    .filter(Passkey::account.eq(a.id()))
                    .all()?;
                Ok((a.id(), keys))
            })
            .await?;
        if existing.len() as u64 >= MAX_PASSKEYS {
            return Err(PasskeyError::BadRequest(format!(
                "an account can have at most {MAX_PASSKEYS} passkeys; remove one first"
            )));
        }
        let handle = match existing.first() {
            Some(p) => Uuid::parse_str(&p.user_handle)
                .map_err(|e| PasskeyError::Internal(format!("a stored user handle is bad: {e}")))?,
            None => Uuid::new_v4(),
        };
        // The authenticators that hold this account's passkeys already are
        // not asked to make a second one.
        let exclude = existing
            .iter()
            .filter_map(|p| serde_json::from_value::<Credential>(p.credential.clone()).ok())
            .map(|c| c.cred_id().clone())
            .collect::<Vec<_>>();
        let (options, state) = webauthn
            .start_passkey_registration(handle, username, username, Some(exclude))
            .map_err(|e| PasskeyError::Internal(format!("cannot start adding a passkey: {e}")))?;
        let mut options = serde_json::to_value(&options)
            .map_err(|e| PasskeyError::Internal(format!("passkey options: {e}")))?;
        // Discoverable, so that sign-in needs no user name (see the module
        // documentation). webauthn-rs asks for "discouraged" and does not
        // check this at the end.
        if let Some(sel) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            sel.insert("residentKey".into(), "required".into());
            sel.insert("requireResidentKey".into(), true.into());
        }
        let state = serde_json::to_value(&state)
            .map_err(|e| PasskeyError::Internal(format!("passkey state: {e}")))?;
        let handle = handle.to_string();
        let id = self
            .site()
            .store()
            .write(move |tx| {
                keep_challenge(tx, ceremony::REGISTER, Some(account), name, handle, state)
            })
            .await?;
        Ok((id, options))
    }

    /// Finishes adding a passkey to `username` with the browser's answer to
    /// the ceremony `id`; returns the passkey's name.
    pub async fn passkey_register_finish(
        &self,
        username: &str,
        id: &str,
        answer: &RegisterPublicKeyCredential,
    ) -> Result<String, PasskeyError> {
        let base_url = self.base_url();
        let webauthn = relying_party(&base_url, "")?;
        let (user, id) = (username.to_string(), id.to_string());
        let challenge = self
            .site()
            .store()
            .write(move |tx| {
                let account = tx
                    .query::<Account>()
                    .filter(Account::username.eq(user))
                    .first()?
                    .map(|a| a.id());
                take_challenge(tx, &id, ceremony::REGISTER, account)
            })
            .await?;
        let account = challenge.account.ok_or(PasskeyError::Expired)?;
        let state: PasskeyRegistration = serde_json::from_value(challenge.state.clone())
            .map_err(|e| PasskeyError::Internal(format!("stored passkey state: {e}")))?;
        let credential = webauthn
            .finish_passkey_registration(answer, &state)
            .map_err(|e| {
                tracing::warn!(user = %username, error = %e, "adding a passkey refused");
                refused(e, &base_url)
            })?;
        let credential_id = b64url(credential.cred_id());
        let stored = serde_json::to_value(&credential)
            .map_err(|e| PasskeyError::Internal(format!("passkey: {e}")))?;
        let (name, handle) = (challenge.name.clone(), challenge.user_handle.clone());
        let item = Passkey {
            credential_id: credential_id.clone(),
            account,
            user_handle: handle,
            name: name.clone(),
            credential: stored,
            created: Timestamp::now(),
            last_used: None,
        };
        self.site()
            .store()
            .write(move |tx| {
                if tx
                    .query::<Passkey>()
                    .filter(Passkey::credential_id.eq(item.credential_id.clone()))
                    .count()?
                    > 0
                {
                    return Err(PasskeyError::BadRequest(
                        "this passkey is already registered".into(),
                    ));
                }
                Ok(tx.insert(&item).map(drop)?)
            })
            .await?;
        tracing::info!(user = %username, passkey = %name, credential = %credential_id, "passkey added");
        Ok(name)
    }

    /// Starts a sign-in with a passkey (any of this site's): the options
    /// for `navigator.credentials.get()`, and the id of the ceremony.
    /// Counts against the rate limit of `ip`.
    pub async fn passkey_sign_in_begin(
        &self,
        ip: Option<IpAddr>,
        rp_name: &str,
    ) -> Result<(String, Value), PasskeyError> {
        let webauthn = relying_party(&self.base_url(), rp_name)?;
        self.throttle(ip, None)?;
        let (options, state): (_, DiscoverableAuthentication) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::Internal(format!("cannot start a passkey sign-in: {e}")))?;
        let mut options = serde_json::to_value(&options)
            .map_err(|e| PasskeyError::Internal(format!("passkey options: {e}")))?;
        // webauthn-rs asks for conditional mediation (autofill); this is a
        // button, which wants the browser's usual dialog.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        let state = serde_json::to_value(&state)
            .map_err(|e| PasskeyError::Internal(format!("passkey state: {e}")))?;
        let id = self
            .site()
            .store()
            .write(move |tx| {
                keep_challenge(
                    tx,
                    ceremony::SIGN_IN,
                    None,
                    String::new(),
                    String::new(),
                    state,
                )
            })
            .await?;
        Ok((id, options))
    }

    /// Finishes a sign-in with the browser's answer to the ceremony `id`,
    /// sent from `ip`; returns the user name, who is then logged in.
    pub async fn passkey_sign_in_finish(
        &self,
        ip: Option<IpAddr>,
        id: &str,
        answer: &PublicKeyCredential,
    ) -> Result<String, PasskeyError> {
        let base_url = self.base_url();
        let webauthn = relying_party(&base_url, "")?;
        let id = id.to_string();
        let challenge = self
            .site()
            .store()
            .write(move |tx| take_challenge(tx, &id, ceremony::SIGN_IN, None))
            .await?;
        let state: DiscoverableAuthentication = serde_json::from_value(challenge.state.clone())
            .map_err(|e| PasskeyError::Internal(format!("stored passkey state: {e}")))?;
        let (handle, credential_id) = webauthn
            .identify_discoverable_authentication(answer)
            .map(|(handle, id)| (handle.to_string(), b64url(id)))
            .map_err(|_| {
                PasskeyError::Refused(
                    "the passkey did not say whose it is; it may not be a passkey of this site"
                        .into(),
                )
            })?;
        let cid = credential_id.clone();
        let found = self
            .site()
            .store()
            .read(move |r| -> mantissa_store::Result<_> {
                let Some(key) = r
                    .query::<Passkey>()
                    .filter(Passkey::credential_id.eq(cid))
                    .first()?
                else {
                    return Ok(None);
                };
                let account = r.get(key.account)?;
                Ok(Some((key, account)))
            })
            .await?;
        let Some((key, account)) = found else {
            tracing::warn!(credential = %credential_id, "passkey sign-in with an unknown passkey");
            return Err(PasskeyError::Unknown);
        };
        if key.user_handle != handle {
            tracing::warn!(user = %account.username, credential = %credential_id, "passkey sign-in with another account's user handle");
            return Err(PasskeyError::Unknown);
        }
        self.throttle_key(ip, crate::service::Key::of(account.id()))?;
        let mut credential: Credential = serde_json::from_value(key.credential.clone())
            .map_err(|e| PasskeyError::Internal(format!("a stored passkey is bad: {e}")))?;
        let result = webauthn
            .finish_discoverable_authentication_v2(answer, state, &credential)
            .map_err(|e| {
                tracing::warn!(user = %account.username, passkey = %key.name, error = %e, "passkey sign-in refused");
                refused(e, &base_url)
            })?;
        may_log_in(&account)?;
        credential.update_credential(&result);
        let stored = serde_json::to_value(&credential)
            .map_err(|e| PasskeyError::Internal(format!("passkey: {e}")))?;
        let key_id = key.id();
        self.site()
            .store()
            .write(move |tx| {
                let mut k = tx.get(key_id)?;
                k.credential = stored;
                k.last_used = Some(Timestamp::now());
                tx.update(&k)
            })
            .await?;
        self.logged_in(&account).await?;
        tracing::info!(user = %account.username, passkey = %key.name, "signed in with a passkey");
        Ok(account.username.clone())
    }

    /// Removes passkey `id` of `username`; its name if it was theirs (and
    /// nothing, changing nothing, if it was not).
    pub async fn remove_passkey(
        &self,
        username: &str,
        id: i64,
    ) -> Result<Option<String>, AccountError> {
        let user = username.to_string();
        let removed = self
            .site()
            .store()
            .write(move |tx| -> mantissa_store::Result<_> {
                let Some(key) = tx.find(Ref::<Passkey>::from_id(id))? else {
                    return Ok(None);
                };
                if tx.get(key.account)?.username != user {
                    return Ok(None);
                }
                tx.delete(key.id())?;
                Ok(Some(key.name.clone()))
            })
            .await?;
        match &removed {
            Some(name) => tracing::info!(user = %username, passkey = %name, "passkey removed"),
            None => {
                tracing::warn!(user = %username, id, "removing a passkey that is not theirs refused")
            }
        }
        Ok(removed)
    }
}
