//! The items accounts are made of, all in the site store.

use mantissa_store::{Item, Ref, Timestamp};

/// Account states.
pub mod status {
    /// Can log in.
    pub const ACTIVE: &str = "active";
    /// Signed up; the email address is not verified yet.
    pub const UNVERIFIED: &str = "unverified";
    /// Signed up; waiting for an administrator's approval.
    pub const PENDING: &str = "pending";
    /// Suspended by an administrator.
    pub const SUSPENDED: &str = "suspended";
}

/// A login account: a user name that maps to the user's own store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.account", version = 1)]
pub struct Account {
    /// The user name, which names the user's store.
    #[item(unique)]
    pub username: String,
    /// One of [`status`].
    pub status: String,
    /// Argon2id PHC string; none until a password is set.
    pub password_hash: Option<String>,
    /// Whether the account administers the site.
    pub admin: bool,
    /// When it was created.
    pub created: Timestamp,
    /// Failed log-ins since the last success.
    pub failed_logins: i64,
    /// Locked after too many failures, until unlocked by an emailed link.
    pub locked: bool,
    /// The TOTP secret (base32), once two-factor set-up has begun.
    pub totp_secret: Option<String>,
    /// Whether log-in asks for a TOTP code.
    pub totp_enabled: bool,
    /// The last time step whose code was accepted (a code works once).
    pub totp_last_step: i64,
    /// How the account joined: `open`, `invitation`, `approval` (sign-up)
    /// or `created` (by an administrator); it picks the product.
    pub joined_by: String,
    /// Whether its product was installed in its store.
    pub product_installed: bool,
}

/// What a new account gets in its store: the offerings whose powerups are
/// installed, per way of joining. Without one, every enabled offering.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.product", version = 1)]
pub struct Product {
    /// `open`, `invitation`, `approval` or `created`.
    #[item(unique)]
    pub joined_by: String,
    /// The offerings' names.
    pub offerings: serde_json::Value,
}

impl Product {
    /// The names of the offerings it gives (a JSON array of strings; what
    /// is not a string is left out).
    pub fn offering_names(&self) -> Vec<String> {
        self.offerings
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An email address of an account.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.email", version = 1)]
pub struct EmailAddress {
    /// The address, lowercased.
    #[item(unique)]
    pub address: String,
    /// Whose it is.
    #[item(on_delete = "cascade")]
    pub account: Ref<Account>,
    /// Whether its owner proved it by following a link.
    pub verified: bool,
}

/// Ticket purposes.
pub mod purpose {
    /// Verify an email address (sign-up, or a changed address).
    pub const VERIFY: &str = "verify";
    /// Set a new password (reset, or a new account's first).
    pub const PASSWORD: &str = "password";
    /// Unlock an account locked after failed log-ins.
    pub const UNLOCK: &str = "unlock";
    /// Invitation to sign up.
    pub const INVITE: &str = "invite";
    /// Move an account to a new email address, once the new one is proved.
    pub const CHANGE_EMAIL: &str = "change-email";
}

/// A one-time, expiring link: the token is sent, only its hash is kept.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.ticket", version = 1)]
pub struct Ticket {
    /// SHA-256 of the token, hex.
    #[item(unique)]
    pub token_hash: String,
    /// One of [`purpose`].
    pub purpose: String,
    /// The account it is for, if any.
    #[item(on_delete = "cascade")]
    pub account: Option<Ref<Account>>,
    /// The address it was sent to, if any.
    pub email: Option<String>,
    /// When it stops working.
    pub expires: Timestamp,
    /// Whether it was used (tickets work once).
    pub used: bool,
}

/// How people join the site.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.signup_policy", version = 1)]
pub struct SignupPolicy {
    /// `open`, `invitation`, `approval` or `closed`.
    pub mechanism: String,
}
