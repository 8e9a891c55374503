//! Delivery status notifications (RFC 3464): the `message/delivery-status`
//! part's fields, one group per recipient.
//!
//! Real reports bend the grammar: groups run together without the blank
//! line between them, fields are folded, the address type is missing, and
//! some servers put the fields in the text part instead of a part of their
//! own. So groups are the paragraphs, and inside a paragraph a new group
//! starts at each recipient field the group already has.

use crate::address;

/// One recipient's fields.
#[derive(Debug, Default, Clone)]
pub(crate) struct Group {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
}

impl Group {
    /// The address this group reports on.
    /// The address as the sender gave it (`Original-Recipient`, which
    /// is what an outbound queue knows), else the one the report is about
    /// (`Final-Recipient`, after aliases were expanded).
    pub fn address(&self) -> Option<String> {
        self.original_recipient
            .as_deref()
            .and_then(address_of)
            .or_else(|| self.final_recipient.as_deref().and_then(address_of))
    }
}

/// `rfc822; user@example.org` (or without the type, or in angle
/// brackets) → `user@example.org`.
fn address_of(value: &str) -> Option<String> {
    let value = value.split_once(';').map_or(value, |(_, a)| a);
    address::first_in(value)
}

/// Header-style fields of `text`, unfolded: (lower-case name, value).
/// Lines that are neither fields nor continuations end the field before.
pub(crate) fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let (true, Some((_, value))) = (open, out.last_mut()) {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        open = false;
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim_end();
            if !name.is_empty()
                && name.len() <= 40
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
                open = true;
            }
        }
    }
    out
}

/// The per-recipient groups of a delivery-status text.
pub(crate) fn groups(text: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    // Paragraphs first (the grammar's groups), then, inside one, a new
    // group at each recipient field its group already has.
    for paragraph in paragraphs(text) {
        let mut current: Option<Group> = None;
        for (name, value) in fields(paragraph) {
            let is_recipient = matches!(name.as_str(), "final-recipient" | "original-recipient");
            let repeats = match name.as_str() {
                "final-recipient" => current
                    .as_ref()
                    .is_some_and(|g| g.final_recipient.is_some()),
                "original-recipient" => current
                    .as_ref()
                    .is_some_and(|g| g.original_recipient.is_some()),
                _ => false,
            };
            if repeats || (current.is_none() && is_recipient) {
                groups.extend(current.take());
                current = Some(Group::default());
            }
            let Some(g) = current.as_mut() else { continue };
            let slot = match name.as_str() {
                "final-recipient" => &mut g.final_recipient,
                "original-recipient" => &mut g.original_recipient,
                "action" => &mut g.action,
                "status" => &mut g.status,
                "diagnostic-code" => &mut g.diagnostic,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        groups.extend(current);
    }
    groups
}

/// `text` cut at blank lines.
fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (line, after) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if line.trim().is_empty() {
                rest = after;
            } else {
                break;
            }
        }
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        let mut cursor = rest;
        loop {
            let (line, after, len) = match cursor.find('\n') {
                Some(i) => (&cursor[..i], &cursor[i + 1..], i + 1),
                None => (cursor, "", cursor.len()),
            };
            if line.trim().is_empty() {
                break;
            }
            end += len;
            cursor = after;
            if cursor.is_empty() {
                break;
            }
        }
        let paragraph = &rest[..end];
        rest = &rest[end..];
        Some(paragraph)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_without_blank_lines() {
        let text = "Reporting-MTA: dns; mx.example\n\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1\n  user unknown\nFinal-Recipient: RFC822; <B@example.org>\nAction: delayed\nStatus: 4.2.2\n";
        let g = groups(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].address().as_deref(), Some("a@example.org"));
        assert_eq!(
            g[0].diagnostic.as_deref(),
            Some("smtp; 550 5.1.1 user unknown")
        );
        assert_eq!(g[1].address().as_deref(), Some("b@example.org"));
        assert_eq!(g[1].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn original_recipient_after_final_is_the_same_group() {
        let text = "Final-Recipient: rfc822; postmaster@example.org\nOriginal-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 4.1.1\n";
        let g = groups(text);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].address().as_deref(), Some("ann@example.org"));
        assert_eq!(g[0].status.as_deref(), Some("4.1.1"));
    }
}
