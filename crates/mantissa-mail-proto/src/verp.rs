//! VERP return paths: a bounce that names its message and its recipient.
//!
//! Mail Mantissa sends carries a return path of the form
//! `bounces+TOKEN@DOMAIN`, and a bounce comes back to that address, so the
//! failing recipient is known without reading the bounce at all. The
//! token is
//!
//! ```text
//! TAG.LOCAL=RDOMAIN
//! ```
//!
//! where `TAG` is the sender's own name for the message (letters and
//! digits only; the outbound queue puts its message id there), and
//! `LOCAL@RDOMAIN` is the recipient. `LOCAL` is kept as it is: it may hold
//! dots, `=` and `+`, because the tag ends at the first dot and the domain
//! starts after the last `=` (a domain holds no `=`). So mail from the
//! site `example.org`, message `q81`, to `ann.lee+news@example.net` has
//! the return path `bounces+q81.ann.lee+news=example.net@example.org`.
//!
//! A recipient whose local part is quoted or holds `@` cannot be carried
//! (no such address is encoded; mail to it gets a plain return path).
//! Receiving servers may change the case of the local part, so the tag
//! is compared without regard to case.

use serde::Serialize;

/// The local part's prefix before the `+`.
pub const PREFIX: &str = "bounces";

/// A decoded VERP return path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verp {
    /// The sender's name for the message (letters and digits).
    pub tag: String,
    /// The recipient the message was sent to.
    pub recipient: String,
    /// The domain the return path was at (the site's).
    pub domain: String,
}

/// The return path for message `tag` to `recipient`, at the site's
/// `domain`; `None` when the tag is not letters and digits or the
/// recipient cannot be carried (no `@`, quoted, spaces).
///
/// ```
/// use mantissa_mail_proto::verp;
/// let path = verp::encode("q81", "ann.lee+news@example.net", "example.org").unwrap();
/// assert_eq!(path, "bounces+q81.ann.lee+news=example.net@example.org");
/// let back = verp::decode(&path).unwrap();
/// assert_eq!(back.recipient, "ann.lee+news@example.net");
/// assert_eq!(back.tag, "q81");
/// ```
pub fn encode(tag: &str, recipient: &str, domain: &str) -> Option<String> {
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (local, rdomain) = recipient.rsplit_once('@')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"@<>()[]\\,;:".contains(&b))
    };
    if !plain(local) || !plain(rdomain) || rdomain.contains('=') || !plain(domain) {
        return None;
    }
    Some(format!("{PREFIX}+{tag}.{local}={rdomain}@{domain}"))
}

/// The message tag and recipient of a VERP return path
/// (`bounces+TAG.LOCAL=RDOMAIN@DOMAIN`, angle brackets allowed around
/// it); `None` for any other address.
pub fn decode(address: &str) -> Option<Verp> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    let (prefix, token) = local.split_once('+')?;
    if !prefix.eq_ignore_ascii_case(PREFIX) || domain.is_empty() {
        return None;
    }
    let (tag, rest) = token.split_once('.')?;
    let (rlocal, rdomain) = rest.rsplit_once('=')?;
    if tag.is_empty()
        || !tag.bytes().all(|b| b.is_ascii_alphanumeric())
        || rlocal.is_empty()
        || rdomain.is_empty()
        || !rdomain.contains(|c: char| c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(Verp {
        tag: tag.to_string(),
        recipient: format!("{rlocal}@{rdomain}"),
        domain: domain.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_dots_equals_and_plus() {
        let path = encode("7f3", "a=b.c+d@mail.example.net", "site.example").unwrap();
        assert_eq!(path, "bounces+7f3.a=b.c+d=mail.example.net@site.example");
        let v = decode(&format!("<{path}>")).unwrap();
        assert_eq!(v.tag, "7f3");
        assert_eq!(v.recipient, "a=b.c+d@mail.example.net");
        assert_eq!(v.domain, "site.example");
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        assert_eq!(encode("", "a@b.example", "s.example"), None);
        assert_eq!(encode("a.b", "a@b.example", "s.example"), None);
        assert_eq!(encode("t", "\"a b\"@b.example", "s.example"), None);
        assert_eq!(encode("t", "nobody", "s.example"), None);
    }

    #[test]
    fn other_addresses_are_not_verp() {
        assert_eq!(decode("bounces@example.org"), None);
        assert_eq!(decode("news+q81.a=b.example@example.org"), None);
        assert_eq!(decode("bounces+q81@example.org"), None);
        assert_eq!(decode("bounces+q81.ab.example@example.org"), None);
        assert_eq!(decode(""), None);
    }
}
