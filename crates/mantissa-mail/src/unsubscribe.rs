//! Unsubscribing from bulk mail: the links, the record of who left which
//! list, and the check that keeps their mail from going out.
//!
//! Bulk mail is mail that does not answer something the person just did:
//! notifications, digests, newsletters. Each such message names the list it
//! belongs to (any name an application chooses: `digest`, `comments`, …)
//! and carries, per recipient, a link that unsubscribes that address from
//! that list ([`link`]), put in the message's `List-Unsubscribe` header
//! ([`OutgoingMail::unsubscribe`](crate::OutgoingMail::unsubscribe)) and,
//! as the application likes, in its text. Mail providers POST to it when
//! the person presses their "Unsubscribe" button (RFC 8058, one-click); a
//! person who follows it in their browser gets a page with a button
//! (`mantissa-accounts` serves both at `/unsubscribe/<token>`).
//!
//! The link's token is signed, not stored: `<address and list,
//! base64url>.<HMAC-SHA256 of them with a random key of the site,
//! base64url, 128 bits>`. Making a link therefore writes nothing (a digest
//! to a hundred thousand addresses makes a hundred thousand links), no one
//! can make a link for another address or list without the key, and a link
//! works for as long as the key does. The key is made on first use and kept
//! in the site store ([`UnsubscribeKey`]). The token names the address it
//! unsubscribes (readable, not secret: it went to that address, and it is
//! in the server's access log like any path).
//!
//! Who left which list is an [`Unsubscribed`] item in the site store (an
//! address may have no account). [`is_unsubscribed`] answers whether an
//! address is off a list; the queue ([`MailQueue`](crate::MailQueue)) and
//! the outbox ([`Outbox::for_site`](crate::Outbox::for_site)) also drop,
//! saying so in the log, a bulk message whose unsubscribe link is one of
//! this site's and whose recipient has left its list, so that an
//! application that forgets to ask sends nothing. ([`SmtpRelay`](crate::SmtpRelay)
//! on its own knows no site, and sends what it is given.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mantissa_store::{Item, Site, StoreError, Timestamp};
use sha2::Sha256;

use crate::{MailError, OutgoingMail};

/// The path under which the links point: `<base URL>/unsubscribe/<token>`.
pub const PATH: &str = "/unsubscribe/";

/// The longest list name.
pub const MAX_LIST_LEN: usize = 64;

/// The longest address a link is made for (RFC 5321's path limit).
const MAX_ADDRESS_LEN: usize = 254;

/// Bytes of the HMAC kept in a token: 128 bits.
const SIGNATURE_LEN: usize = 16;

/// An address that left a list: no more bulk mail of that list goes to it.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.unsubscribed", version = 1)]
pub struct Unsubscribed {
    /// The list's name.
    pub list: String,
    /// The address, lowercase.
    #[item(index)]
    pub address: String,
    /// When it left.
    pub at: Timestamp,
}

/// The site's key that signs unsubscribe links (one per site, made on
/// first use).
#[derive(Item, Clone, PartialEq)]
#[item(name = "mantissa.unsubscribe_key", version = 1)]
pub struct UnsubscribeKey {
    /// 32 random bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for UnsubscribeKey {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeKey").finish_non_exhaustive()
    }
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The address, lowercase.
    pub address: String,
    /// The list.
    pub list: String,
}

/// Whether `list` is a list name: 1 to [`MAX_LIST_LEN`] lowercase letters,
/// digits, `.`, `_` and `-`.
pub fn is_list_name(list: &str) -> bool {
    !list.is_empty()
        && list.len() <= MAX_LIST_LEN
        && list.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// `address` as it is kept and compared: trimmed, lowercase.
fn normal(address: &str) -> String {
    address.trim().to_lowercase()
}

fn check(address: &str, list: &str) -> Result<String, MailError> {
    if !is_list_name(list) {
        return Err(MailError::BadList {
            list: list.to_string(),
        });
    }
    let address = normal(address);
    if address.len() > MAX_ADDRESS_LEN
        || !address.contains('@')
        || address.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(MailError::Build(format!(
            "{address:?} is not an email address to make an unsubscribe link for"
        )));
    }
    Ok(address)
}

/// The site's signing key, made now if it has none.
async fn key(site: &Site) -> Result<Vec<u8>, MailError> {
    let found = site
        .store()
        .read(|r| r.query::<UnsubscribeKey>().first())
        .await?;
    if let Some(k) = found {
        return Ok(k.into_inner().secret);
    }
    let mut fresh = vec![0u8; 32];
    getrandom::fill(&mut fresh).expect("the OS random source works");
    // Looked for again inside the write: two first links made at once get
    // the same key.
    Ok(site
        .store()
        .write(move |tx| -> Result<_, StoreError> {
            if let Some(k) = tx.query::<UnsubscribeKey>().first()? {
                return Ok(k.into_inner().secret);
            }
            tx.insert(&UnsubscribeKey {
                secret: fresh.clone(),
            })?;
            Ok(fresh)
        })
        .await?)
}

fn signature(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"mantissa unsubscribe\n");
    mac.update(payload);
    mac.finalize().into_bytes()[..SIGNATURE_LEN].to_vec()
}

/// The token that unsubscribes `address` from `list`.
pub async fn token(site: &Site, address: &str, list: &str) -> Result<String, MailError> {
    let address = check(address, list)?;
    let key = key(site).await?;
    let payload = format!("{address}\n{list}");
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(signature(&key, payload.as_bytes()))
    ))
}

/// The one-click URL that unsubscribes `address` from `list`:
/// `<base_url>/unsubscribe/<token>`, where `base_url` is the site's
/// public address (`https://example.org`). Mail providers only offer
/// one-click unsubscribing for an HTTPS link.
pub async fn link(
    site: &Site,
    base_url: &str,
    address: &str,
    list: &str,
) -> Result<String, MailError> {
    let token = token(site, address, list).await?;
    Ok(format!("{}{PATH}{token}", base_url.trim_end_matches('/')))
}

/// What `token` names, if it is one this site signed.
pub async fn verify(site: &Site, token: &str) -> Result<Option<Subscription>, MailError> {
    let Some((payload, sig)) = token.split_once('.') else {
        return Ok(None);
    };
    let (Ok(payload), Ok(sig)) = (URL_SAFE_NO_PAD.decode(payload), URL_SAFE_NO_PAD.decode(sig))
    else {
        return Ok(None);
    };
    // No key yet: no link was ever made.
    let Some(key) = site
        .store()
        .read(|r| r.query::<UnsubscribeKey>().first())
        .await?
    else {
        return Ok(None);
    };
    let expected = signature(&key.secret, &payload);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        sig.as_slice(),
        expected.as_slice(),
    )) {
        return Ok(None);
    }
    let Some((address, list)) = std::str::from_utf8(&payload)
        .ok()
        .and_then(|p| p.split_once('\n'))
    else {
        return Ok(None);
    };
    Ok(Some(Subscription {
        address: address.to_string(),
        list: list.to_string(),
    }))
}

/// Records that `address` left `list`; true if it had not already.
pub async fn unsubscribe(site: &Site, address: &str, list: &str) -> Result<bool, MailError> {
    let address = check(address, list)?;
    let list = list.to_string();
    let new = site
        .store()
        .write(move |tx| -> Result<_, StoreError> {
            let known = tx
                .query::<Unsubscribed>()
                .filter(Unsubscribed::address.eq(address.as_str()))
                .filter(Unsubscribed::list.eq(list.as_str()))
                .first()?;
            if known.is_some() {
                return Ok(false);
            }
            tx.insert(&Unsubscribed {
                list: list.clone(),
                address: address.clone(),
                at: Timestamp::now(),
            })?;
            tracing::info!(list = %list, "an address unsubscribed from a list");
            Ok(true)
        })
        .await?;
    Ok(new)
}

/// Takes `address` back onto `list` (the person asked for it again);
/// true if it had left it.
pub async fn resubscribe(site: &Site, address: &str, list: &str) -> Result<bool, MailError> {
    let address = check(address, list)?;
    let list = list.to_string();
    let removed = site
        .store()
        .write(move |tx| {
            tx.delete_where(
                Unsubscribed::address
                    .eq(address.as_str())
                    .and(Unsubscribed::list.eq(list.as_str())),
            )
        })
        .await?;
    Ok(removed > 0)
}

/// Whether `address` has left `list`: ask before composing bulk mail to it.
pub async fn is_unsubscribed(site: &Site, address: &str, list: &str) -> Result<bool, MailError> {
    let address = normal(address);
    let list = list.to_string();
    Ok(site
        .store()
        .read(move |r| {
            r.query::<Unsubscribed>()
                .filter(Unsubscribed::address.eq(address.as_str()))
                .filter(Unsubscribed::list.eq(list.as_str()))
                .count()
        })
        .await?
        > 0)
}

/// The lists `address` has left, with when.
pub async fn lists_left(site: &Site, address: &str) -> Result<Vec<Unsubscribed>, MailError> {
    let address = normal(address);
    Ok(site
        .store()
        .read(move |r| {
            r.query::<Unsubscribed>()
                .filter(Unsubscribed::address.eq(address.as_str()))
                .all()
        })
        .await?
        .into_iter()
        .map(|u| u.into_inner())
        .collect())
}

/// `mail` without the recipients who left its list, when it is bulk mail
/// whose unsubscribe link is one of `site`'s; none when no one is left
/// (each dropped recipient logged). Mail that is not bulk, or whose link is
/// not the site's, goes as it is.
pub(crate) async fn without_unsubscribed(
    site: &Site,
    mut mail: OutgoingMail,
) -> Result<Option<OutgoingMail>, MailError> {
    let Some(url) = &mail.unsubscribe else {
        return Ok(Some(mail));
    };
    let Some((_, token)) = url.rsplit_once(PATH) else {
        return Ok(Some(mail));
    };
    let Some(named) = verify(site, token).await? else {
        return Ok(Some(mail));
    };
    if !is_unsubscribed(site, &named.address, &named.list).await? {
        return Ok(Some(mail));
    }
    let before = mail.to.len();
    mail.to.retain(|to| normal(to) != named.address);
    if mail.to.len() < before {
        tracing::info!(
            to = %named.address,
            list = %named.list,
            subject = %mail.subject,
            "bulk mail not sent: the address unsubscribed from the list"
        );
    }
    Ok((!mail.to.is_empty()).then_some(mail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names() {
        assert!(is_list_name("digest"));
        assert!(is_list_name("blog.comments-2"));
        assert!(!is_list_name(""));
        assert!(!is_list_name("Digest"));
        assert!(!is_list_name("a\nb"));
        assert!(!is_list_name(&"x".repeat(MAX_LIST_LEN + 1)));
    }
}
