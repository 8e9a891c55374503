//! The audit log: who did what to whom, and when, for every administrative
//! action (from the console or the command line), kept in the site store.
//!
//! An entry is written in the same transaction as the change it records
//! where the change is one write (suspend, approve, …), so that neither
//! survives without the other; where it is not (a deletion, which exports
//! and removes a file), right after the change succeeded.

use mantissa_store::{Item, Timestamp, Write};

/// One administrative action.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.audit", version = 1)]
pub struct AuditEntry {
    /// When.
    #[item(index)]
    pub at: Timestamp,
    /// Who did it: an administrator's user name, or `command line`.
    pub actor: String,
    /// What, as a fixed key: `suspend`, `unsuspend`, `approve`, `delete`,
    /// `create`, `reset`, `two-factor-off`, `signup`, `offering-on`,
    /// `offering-off`, `product`.
    pub action: String,
    /// To what: an account, an offering or a way of joining.
    pub target: String,
    /// More, for people (may be empty).
    pub detail: String,
}

/// Records `action` by `actor` on `target` in `tx`.
pub fn record(
    tx: &mut Write<'_>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> mantissa_store::Result<()> {
    tx.insert(&AuditEntry {
        at: Timestamp::now(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    })?;
    Ok(())
}

/// The entry's action in words, sentence case.
pub fn describe(action: &str) -> &'static str {
    match action {
        "suspend" => "Suspended",
        "unsuspend" => "Unsuspended",
        "approve" => "Approved",
        "delete" => "Deleted",
        "create" => "Created",
        "reset" => "Sent a reset link to",
        "two-factor-off" => "Turned off two-factor log-in of",
        "signup" => "Set sign-up to",
        "offering-on" => "Switched on",
        "offering-off" => "Switched off",
        "product" => "Changed what new accounts get when they join by",
        "mail-retry" => "Asked for another try of queued mail",
        "mail-retry-all" => "Asked for another try of all waiting and failed mail",
        "mail-drop" => "Dropped queued mail",
        _ => "Did something to",
    }
}
