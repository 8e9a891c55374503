//! Delivery status notifications (RFC 3464): the `message/delivery-status`
//! part's fields, one group per recipient.
//!
//! Real reports bend the grammar: groups run together without the blank
//! line between them, fields are folded, the address type is missing, and
//! some servers put the fields in the text part instead of a part of their
//! own. So a new group starts at each `Final-Recipient` (or at an
//! `Original-Recipient` after one), whatever the blank lines say.

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
    pub fn address(&self) -> Option<String> {
        self.final_recipient
            .as_deref()
            .and_then(address_of)
            .or_else(|| self.original_recipient.as_deref().and_then(address_of))
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
    let mut current: Option<Group> = None;
    for (name, value) in fields(text) {
        let starts_group = match name.as_str() {
            "final-recipient" => current
                .as_ref()
                .is_some_and(|g| g.final_recipient.is_some()),
            "original-recipient" => current
                .as_ref()
                .is_some_and(|g| g.final_recipient.is_some() || g.original_recipient.is_some()),
            _ => false,
        };
        let recipient_field = matches!(name.as_str(), "final-recipient" | "original-recipient");
        if starts_group || (current.is_none() && recipient_field) {
            if let Some(g) = current.take() {
                groups.push(g);
            }
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
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_without_blank_lines() {
        let text = "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1\n  user unknown\nFinal-Recipient: RFC822; <B@example.org>\nAction: delayed\nStatus: 4.2.2\n";
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
}
