//! DKIM signing (RFC 6376) of the site's outbound mail, so that receivers
//! can tell that mail claiming to come from the site's domain does.
//!
//! The site keeps one key per sending domain in its site store
//! ([`DkimKey`]): an RSA-2048 key (what every verifier accepts; Ed25519,
//! RFC 8463, is not verified by all of the large receivers yet), made by
//! `mantissa mail dkim generate`, which prints the DNS record to publish.
//! A message is signed when it is rendered ([`crate::render_signed`]):
//! once, when it is queued, so that every attempt sends the same signed
//! bytes, and when it is written to the development outbox, so that what a
//! developer reads is what would go out. A message whose `From` domain has
//! no key goes unsigned, as before.
//!
//! The signing itself is `mail-auth`'s (Stalwart's); this module chooses
//! what is signed: relaxed canonicalization of header and body (survives
//! the whitespace changes relays make) and the headers a receiver shows or
//! that change a message's meaning.
//!
//! The key is in the site store, as the relay's settings are: whoever can
//! read the site's files or database can sign as the site. (Keeping
//! secrets outside the store is issue 16's item 5, still to do.)

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mantissa_store::{Item, Read, Site, StoreError};

use crate::MailError;

/// The headers signed when present (a header named but missing is signed
/// as empty, which stops it being added later; mail-auth skips those the
/// message lacks, so only the first ones are always there).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A DKIM signing key of the site, for one domain, kept in the site store.
#[derive(Item, Clone, PartialEq)]
#[item(name = "mantissa.dkim_key", version = 1)]
pub struct DkimKey {
    /// The signing domain (`d=`): the domain of the site's `From` address.
    #[item(index)]
    pub domain: String,
    /// The selector (`s=`): the DNS name's first label.
    pub selector: String,
    /// The RSA private key, PKCS#1 DER.
    pub private_key: Vec<u8>,
    /// The public key, PKCS#1 DER, as the DNS record carries it.
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for DkimKey {
    // Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// What `mantissa mail dkim generate` names a key when not told: the year
/// and month, so that a key rotated later gets a selector of its own and
/// both records can be published while mail signed with the old one is
/// still on its way.
pub fn default_selector() -> String {
    let now = mantissa_store::Timestamp::now().to_string();
    // "2026-12-07T…" → "m202612"
    format!("m{}{}", &now[0..4], &now[5..7])
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `domain` is a DNS name a key can be published under.
fn is_domain(domain: &str) -> bool {
    domain.len() <= 253 && domain.contains('.') && domain.split('.').all(is_dns_label)
}

impl DkimKey {
    /// A new RSA-2048 key for `domain`, named `selector`. Refuses a domain
    /// or selector that is not a DNS name.
    pub fn generate(domain: &str, selector: &str) -> Result<DkimKey, MailError> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_domain(&domain) {
            return Err(MailError::Dkim(format!(
                "{domain:?} is not a domain name (like example.com)"
            )));
        }
        if !is_dns_label(selector) {
            return Err(MailError::Dkim(format!(
                "{selector:?} is not a selector: letters, digits and '-', at most 63"
            )));
        }
        let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048)
            .map_err(|e| MailError::Dkim(format!("making the key: {e}")))?;
        let (private_key, public_key) = pair.into_inner();
        Ok(DkimKey {
            domain,
            selector: selector.to_string(),
            private_key,
            public_key,
        })
    }

    /// The DNS name the record goes under: `<selector>._domainkey.<domain>`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record's text: `v=DKIM1; k=rsa; p=<public key, base64>`.
    pub fn record_value(&self) -> String {
        use base64::Engine;
        format!(
            "v=DKIM1; k=rsa; p={}",
            base64::engine::general_purpose::STANDARD.encode(&self.public_key)
        )
    }

    /// The record as a zone-file line. A TXT string holds at most 255
    /// bytes, and a 2048-bit key's record is longer, so it is written as
    /// several quoted strings, which resolvers join.
    pub fn zone_line(&self) -> String {
        let value = self.record_value();
        let strings: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!(
            "{}. 3600 IN TXT ( {} )",
            self.record_name(),
            strings.join(" ")
        )
    }

    /// `message` (RFC 5322 bytes) with a `DKIM-Signature` header first.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MailError> {
        let key = RsaKey::<Sha256>::from_key_der(rustls_pki_types::PrivateKeyDer::Pkcs1(
            self.private_key.clone().into(),
        ))
        .map_err(|e| MailError::Dkim(format!("the key for {}: {e}", self.domain)))?;
        let signature = DkimSigner::from_key(key)
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(SIGNED_HEADERS.iter().copied())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map_err(|e| MailError::Dkim(format!("signing as {}: {e}", self.domain)))?;
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(message);
        Ok(signed)
    }

    /// The site's key for `domain`, if it has one.
    pub fn for_domain(site: &Site, domain: &str) -> Result<Option<DkimKey>, StoreError> {
        let domain = domain.to_ascii_lowercase();
        site.store().read_blocking(|r| DkimKey::lookup(r, &domain))
    }

    /// [`DkimKey::for_domain`], awaited.
    pub async fn for_domain_async(
        site: &Site,
        domain: &str,
    ) -> Result<Option<DkimKey>, StoreError> {
        let domain = domain.to_ascii_lowercase();
        site.store()
            .read(move |r| DkimKey::lookup(r, &domain))
            .await
    }

    fn lookup(r: &Read<'_>, domain: &str) -> Result<Option<DkimKey>, StoreError> {
        Ok(r.query::<DkimKey>()
            .filter(DkimKey::domain.eq(domain))
            .first()?
            .map(|k| k.into_inner()))
    }

    /// Every key of the site.
    pub fn all(site: &Site) -> Result<Vec<DkimKey>, StoreError> {
        Ok(site
            .store()
            .read_blocking(|r| r.query::<DkimKey>().all())?
            .into_iter()
            .map(|k| k.into_inner())
            .collect())
    }

    /// Keeps this key as the one for its domain, in place of any other.
    pub fn save(site: &Site, key: DkimKey) -> Result<(), StoreError> {
        site.store().write_blocking(move |tx| {
            let old: Vec<_> = tx
                .query::<DkimKey>()
                .filter(DkimKey::domain.eq(key.domain.as_str()))
                .all()?;
            for k in old {
                tx.delete(k.id())?;
            }
            tx.insert(&key).map(drop)
        })
    }
}

/// The domain of the address in a `From` value (`Name <a@b.c>` or `a@b.c`).
pub fn sender_domain(from: &str) -> Option<String> {
    let address = match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => &from[a + 1..b],
        _ => from,
    };
    let (_, domain) = address.trim().rsplit_once('@')?;
    Some(domain.trim().to_ascii_lowercase()).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_domains() {
        assert_eq!(
            sender_domain("a@Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            sender_domain("Site <noreply@mail.example.org>").as_deref(),
            Some("mail.example.org")
        );
        assert_eq!(sender_domain("nobody"), None);
    }

    #[test]
    fn bad_names_are_refused_before_a_key_is_made() {
        let e = DkimKey::generate("localhost", "s1").unwrap_err();
        assert!(e.to_string().contains("not a domain name"), "{e}");
        let e = DkimKey::generate("example.com", "a b").unwrap_err();
        assert!(e.to_string().contains("not a selector"), "{e}");
    }
}
