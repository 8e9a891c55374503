//! E-mail addresses on public pages cost a request to see.
//!
//! Public pages are those marked [`Page::hiding_addresses`]: the front page,
//! every published item's page, and an offering's own public pages.
//! Writing an address as character references (`&#97;&#64;…`) stops no
//! harvester: every HTML parser decodes them, and a page's JSON twin at
//! `/api/…` carried the address in plain text anyway. So a visitor who is
//! not signed in is never sent an address of a public page, in any
//! encoding. Each
//! e-mail-looking word in a template's text (and in the strings of a page's
//! JSON) becomes a link to `/reveal/TOKEN`, where TOKEN is the address
//! sealed with a key of the site's (ChaCha20-Poly1305, from `ring`, which
//! TLS already brings in): the link itself tells nothing. Following it
//! shows a page with a button; the button posts (with the CSRF token) and
//! the answer shows the address, as a `mailto:` link. Each client address
//! may see [`REVEALS_PER_HOUR`] addresses an hour, so a person who wants to
//! write to someone barely notices, while a harvester pays two requests and
//! a form per address, at a rate that makes harvesting a site worthless.
//! Crawlers are told to stay away (`rel="nofollow"`, `noindex`). Signed-in
//! people see addresses as they are (as character references, which cost
//! nothing and keep naive scrapers of shared pages out).
//!
//! The token is deterministic (its nonce is a keyed hash of the address),
//! so a page that shows the same addresses is the same bytes each time and
//! keeps its ETag. That tells a reader that two links hide the same
//! address, which is all it tells.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::Range;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::Quota;
use mantissa_store::{Item, Site, StoreError};
use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

use crate::app::App;
use crate::page::Page;
use crate::protect::{AddressLimiter, client_ip};

/// Addresses one client address may see an hour (after a first burst of
/// as many).
pub const REVEALS_PER_HOUR: u32 = 20;

/// The site's key for sealing addresses, made with the site.
#[derive(Item, Debug)]
#[item(name = "mantissa.reveal_key", version = 1)]
pub(crate) struct RevealKey {
    key: Vec<u8>,
}

/// Seals addresses into tokens and opens them, and counts reveals.
pub struct Reveals {
    key: LessSafeKey,
    nonces: hmac::Key,
    limiter: AddressLimiter,
}

impl std::fmt::Debug for Reveals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reveals").finish_non_exhaustive()
    }
}

impl Reveals {
    /// The site's sealer, its key made and stored on first use. Blocking.
    pub(crate) fn load_or_init(site: &Site) -> Result<Reveals, StoreError> {
        let stored = site
            .store()
            .read_blocking(|r| r.query::<RevealKey>().first())?;
        let key = match stored {
            Some(k) => k.into_inner().key,
            None => {
                let mut fresh = vec![0u8; 64];
                getrandom::fill(&mut fresh).expect("the OS random source works");
                site.store()
                    .write_blocking(move |tx| -> mantissa_store::Result<_> {
                        // Another process may have made one meanwhile: theirs wins.
                        match tx.query::<RevealKey>().first()? {
                            Some(k) => Ok(k.into_inner().key),
                            None => {
                                tx.insert(&RevealKey { key: fresh.clone() })?;
                                Ok(fresh)
                            }
                        }
                    })?
            }
        };
        Ok(Reveals::with_key(&key))
    }

    fn with_key(key: &[u8]) -> Reveals {
        let (seal, nonce) = key.split_at(32);
        let per_hour = NonZeroU32::new(REVEALS_PER_HOUR).expect("nonzero");
        Reveals {
            key: LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, seal).expect("32 bytes")),
            nonces: hmac::Key::new(hmac::HMAC_SHA256, nonce),
            limiter: AddressLimiter::new(Quota::per_hour(per_hour)),
        }
    }

    /// The token for `address`: the same address always gives the same one.
    pub fn seal(&self, address: &str) -> String {
        let tag = hmac::sign(&self.nonces, address.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut sealed = address.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut sealed,
            )
            .expect("an address is far below the AEAD's limit");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The address sealed in `token`, if it is one of this site's tokens.
    pub fn open(&self, token: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let opened = self
            .key
            .open_in_place(nonce, ring::aead::Aad::empty(), &mut sealed)
            .ok()?;
        String::from_utf8(opened.to_vec()).ok()
    }

    /// Counts one reveal for `ip`: how long to wait when it is one too many.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter.check(ip)
    }

    /// `text` as HTML for a visitor who is not signed in: escaped, with each
    /// address a link to its reveal page.
    pub fn hide_in_html(&self, text: &str) -> String {
        each_address(text, escape_into, |address, out| {
            out.push_str("<a class=\"email-reveal\" href=\"/reveal/");
            out.push_str(&self.seal(address));
            out.push_str("\" rel=\"nofollow\">e-mail address (show)</a>");
        })
    }

    /// Every string in `value` with its addresses replaced by the path of
    /// their reveal pages, for a visitor who is not signed in.
    pub fn hide_in_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) if s.contains('@') => {
                *s = each_address(
                    s,
                    |gap, out| out.push_str(gap),
                    |address, out| {
                        out.push_str("[e-mail address: /reveal/");
                        out.push_str(&self.seal(address));
                        out.push(']');
                    },
                );
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| self.hide_in_json(v));
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.hide_in_json(v));
            }
            _ => {}
        }
    }
}

/// `text` as HTML with each address written as character references, for
/// signed-in people (see the module documentation).
pub fn references_in_html(text: &str) -> String {
    each_address(text, escape_into, |address, out| {
        for c in address.chars() {
            out.push_str(&format!("&#{};", c as u32));
        }
    })
}

/// `text` rewritten: each e-mail address in it written by `address`, the
/// text between them by `gap`.
fn each_address(
    text: &str,
    gap: impl Fn(&str, &mut String),
    address: impl Fn(&str, &mut String),
) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut at = 0;
    for r in addresses(text) {
        gap(&text[at..r.start], &mut out);
        address(&text[r.clone()], &mut out);
        at = r.end;
    }
    gap(&text[at..], &mut out);
    out
}

/// Writes `text` escaped for HTML.
fn escape_into(text: &str, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{}", minijinja::HtmlEscape(text));
}

/// Where the e-mail addresses are in `text`: a local part of letters,
/// digits and `._%+-`, an `@`, and a domain of letters, digits, `-` and at
/// least one inner dot (a sentence's full stop after it is not part of it).
pub fn addresses(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let mut found: Vec<Range<usize>> = Vec::new();
    for (at, _) in text.match_indices('@') {
        if found.last().is_some_and(|r| r.end > at) {
            continue;
        }
        let start = bytes[..at]
            .iter()
            .rposition(|&b| !local(b))
            .map_or(0, |i| i + 1);
        let mut end = bytes[at + 1..]
            .iter()
            .position(|&b| !domain(b))
            .map_or(bytes.len(), |i| at + 1 + i);
        while end > at + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let host = &text[at + 1..end];
        if start < at && host.contains('.') && !host.starts_with('.') {
            found.push(start..end);
        }
    }
    found
}

/// `GET /reveal/{token}`: a page with the button that shows the address.
pub(crate) async fn reveal_page(State(app): State<App>, Path(token): Path<String>) -> Response {
    if app.reveals().open(&token).is_none() {
        return unknown_link();
    }
    no_index(
        Page::new(
            "reveal.html",
            serde_json::json!({ "token": token, "address": null }),
        )
        .into_response(),
    )
}

/// `POST /reveal/{token}`: the address, if this client address has not
/// seen too many this hour.
pub(crate) async fn reveal(
    State(app): State<App>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    // Only what `addresses` finds is ever sealed: an address of plain
    // characters, safe to write into the page as it is.
    let Some(address) = app
        .reveals()
        .open(&token)
        .filter(|a| addresses(a).first() == Some(&(0..a.len())))
    else {
        return unknown_link();
    };
    if let Some(ip) = client_ip(&req)
        && let Err(wait) = app.reveals().check(ip)
    {
        metrics::counter!("mantissa_requests_refused_total", "reason" => "reveals").increment(1);
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut page = Page::new(
            "reveal.html",
            serde_json::json!({
                "token": token,
                "address": null,
                "refused": format!(
                    "Too many e-mail addresses have been shown to your network in the last hour. Please try again in {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                ),
            }),
        );
        page.status = StatusCode::TOO_MANY_REQUESTS;
        let mut r = page.into_response();
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return no_index(r);
    }
    let mut r = Page::new(
        "reveal.html",
        serde_json::json!({ "token": token, "address": address }),
    )
    .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    no_index(r)
}

fn unknown_link() -> Response {
    crate::page::WebError::NotFound.into_response()
}

/// Asks search engines to keep the page out of their index.
fn no_index(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reveals() -> Reveals {
        Reveals::with_key(&[7u8; 64])
    }

    #[test]
    fn an_address_sees_so_many_addresses_an_hour() {
        let r = reveals();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..REVEALS_PER_HOUR {
            assert!(r.check(ip).is_ok(), "reveal {i}");
        }
        let wait = r.check(ip).unwrap_err();
        assert!(
            wait > Duration::from_secs(60) && wait <= Duration::from_secs(180),
            "{wait:?}"
        );
        assert!(r.check("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn addresses_are_found_in_text_and_punctuation_is_left_out() {
        let text =
            "Write to alice@example.org. Or (bob.b+x@mail.example.co.uk), not @home or a@b or x@.y";
        let found: Vec<&str> = addresses(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(found, ["alice@example.org", "bob.b+x@mail.example.co.uk"]);
    }

    #[test]
    fn a_token_opens_to_its_address_and_tells_nothing_of_it() {
        let r = reveals();
        let token = r.seal("alice@example.org");
        assert_eq!(token, r.seal("alice@example.org"), "deterministic");
        assert_ne!(token, r.seal("alicf@example.org"));
        assert!(!token.contains("alice") && !token.contains("example"));
        assert_eq!(r.open(&token).as_deref(), Some("alice@example.org"));
        assert_eq!(
            Reveals::with_key(&[8u8; 64]).open(&token),
            None,
            "another site's"
        );
        let mut forged = token.into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(r.open(&String::from_utf8(forged).unwrap()), None);
        assert_eq!(r.open("not a token"), None);
    }

    #[test]
    fn text_is_escaped_around_hidden_addresses() {
        let r = reveals();
        let html = r.hide_in_html("<b>Tom & Jerry</b> at tom@example.org \"now\"");
        assert!(html.starts_with("&lt;b&gt;Tom &amp; Jerry&lt;&#x2f;b&gt; at <a class=\"email-reveal\" href=\"/reveal/"), "{html}");
        assert!(
            html.ends_with("\">e-mail address (show)</a> &quot;now&quot;"),
            "{html}"
        );
        assert!(!html.contains("tom@") && !html.contains("&#116;"));
        let refs = references_in_html("a & tom@example.org");
        assert_eq!(
            refs,
            format!(
                "a &amp; {}",
                "tom@example.org"
                    .chars()
                    .map(|c| format!("&#{};", c as u32))
                    .collect::<String>()
            )
        );
        let mut json = serde_json::json!({ "contact": ["Write to tom@example.org."], "n": 1 });
        r.hide_in_json(&mut json);
        let s = json["contact"][0].as_str().unwrap();
        assert!(
            s.starts_with("Write to [e-mail address: /reveal/") && s.ends_with("]."),
            "{s}"
        );
    }
}
