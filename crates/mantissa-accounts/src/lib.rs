//! Mantissa's accounts: login accounts in the site store that map a user
//! name (and email addresses) to the user's own store; sign-up by the site's
//! chosen mechanism with email verification; log-in and log-out; password
//! reset and change; locking after repeated failures; two-factor log-in
//! ([`totp`]); passkeys ([`passkeys`]); and sharing items with roles and
//! capabilities ([`sharing`]).
//!
//! It owns the account items and pages. It uses the store and the web like
//! any application, and sends mail only through `mantissa-mail`'s
//! outbound interface.
//!
//! Security choices: Argon2id passwords (see [`password`]); tickets in
//! mail are random tokens of which only a hash is kept, expiring in a day
//! and working once; log-in takes as long for an unknown account as for a
//! known one, and says the same; log-in, sign-up and reset are rate-limited
//! per address and per account; ten failures in a row lock the account
//! until an emailed link unlocks it; a new password ends every other
//! session. A passkey sign-in is a full log-in (no password, no TOTP code)
//! that passes the same rate limits and account checks; why webauthn-rs,
//! and which ceremony state is kept where, is told in [`passkeys`].

mod admin;
pub mod model;
mod pages;
pub mod passkeys;
pub mod password;
mod service;
pub mod sharing;
pub mod tokens;
pub mod totp;

pub use model::{Account, EmailAddress, SignupPolicy, Ticket};
pub use pages::{REMEMBER_FOR, SettingsOffering, routes};
pub use passkeys::{CHALLENGE_LIFETIME, Passkey, PasskeyChallenge, PasskeyError};
pub use service::{AccountError, Accounts, LOCK_AFTER, TICKET_LIFETIME};
pub use sharing::{
    AccountId, Group, GroupMember, Role, Share, ShareError, SharePolicy, account_names,
    find_account, revoke_grants, set_group, share, unshare,
};
pub use tokens::{ApiToken, TokenAuthenticator};
