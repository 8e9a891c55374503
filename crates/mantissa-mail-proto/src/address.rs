//! Finding mail addresses in free text.

/// Characters of a local part (RFC 5322 atext and dots).
fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-.".contains(&b)
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// Every address in `text`, lower case, in order, each with the byte
/// range it came from.
pub(crate) fn all_in(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0 && local_char(b[start - 1]) {
            start -= 1;
        }
        while start < i && b[start] == b'.' {
            start += 1;
        }
        let mut end = i + 1;
        while end < b.len() && domain_char(b[end]) {
            end += 1;
        }
        while end > i + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[i + 1..end];
        let local = &text[start..i];
        if !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.contains("..")
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().any(|c| c.is_ascii_alphabetic()))
        {
            out.push((format!("{local}@{domain}").to_ascii_lowercase(), start..end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The first address in `text`, lower case.
pub(crate) fn first_in(text: &str) -> Option<String> {
    all_in(text).into_iter().next().map(|(a, _)| a)
}

/// The local part of an address names a mail system, not a person.
pub(crate) fn is_daemon(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("");
    matches!(
        local,
        "mailer-daemon"
            | "mailerdaemon"
            | "mail-daemon"
            | "maildaemon"
            | "postmaster"
            | "mailer_daemon"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_text() {
        let found: Vec<String> =
            all_in("<Kiji.Tora@Example.JP>: host x said, mail to bob@b.example.org.")
                .into_iter()
                .map(|(a, _)| a)
                .collect();
        assert_eq!(found, ["kiji.tora@example.jp", "bob@b.example.org"]);
        assert!(all_in("user@localhost and @ alone and a@b.12").is_empty());
    }
}
