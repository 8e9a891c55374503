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
//! and working once, and once the password changes (or one of them is
//! used) every other link for the owner dies; log-in takes as long for an
//! unknown account as for a known one, and says the same; log-in, sign-up
//! and reset are rate-limited per address and per account, the account
//! keyed by the account itself once resolved (else a hash of the name), and
//! names or addresses too long to be anyone's are refused before that;
//! failed passwords, and wrong second-factor codes on their own count,
//! make the account and the address wait longer and longer
//! (`backoff`), which a stranger cannot turn into a lock; a new password
//! ends every other session, and a reset also every API token; the
//! second factor's last accepted step is checked and set in one write
//! transaction, so a code works once even for concurrent log-ins. Changing
//! the password, the email address or the second factor needs the person
//! (a session), never an API token.
//!
//! What is public: user names are (they name `/users/NAME/…` pages, and
//! sign-up says when one is taken); whether an email address has an
//! account is not (sign-up and reset answer the same either way, mail
//! after answering, and sign-up with a known address mails its owner).
//!
//! Ended sessions, used or expired links and old passkey challenges are
//! purged hourly on the store's scheduler ([`upkeep`]).
//!
//! The administrator's console (`/admin`, in sections) calls the same
//! methods of [`Accounts`] as the command line can (approve, suspend,
//! unsuspend, delete an account, create one with a welcome mail), and each
//! is written to the audit log ([`audit`]); its charts read the counts
//! [`activity`] writes once a minute. Every mail is a template a theme can
//! override ([`mail`]), with an HTML part beside its text.
//!
//! The accounts also serve the unsubscribe links of the bulk mail that
//! applications send (`/unsubscribe/…`, one-click by RFC 8058:
//! [`unsubscribe`]).
//!
//! A passkey sign-in is a full log-in (no password, no TOTP code)
//! that passes the same rate limits and account checks; why webauthn-rs,
//! and which ceremony state is kept where, is told in [`passkeys`].

pub mod activity;
mod admin;
pub mod audit;
mod backoff;
pub mod mail;
pub mod manage;
pub mod model;
mod nav;
mod pages;
pub mod passkeys;
pub mod password;
mod service;
mod settings;
pub mod sharing;
pub mod tokens;
pub mod totp;
pub mod unsubscribe;
pub mod upkeep;

pub use audit::AuditEntry;
pub use manage::{Approval, EmailSummary, UserDetails, UserSummary};
pub use model::{Account, EmailAddress, SignupPolicy, Ticket};
pub use pages::{REMEMBER_FOR, SettingsOffering, routes};
pub use passkeys::{CHALLENGE_LIFETIME, Passkey, PasskeyChallenge, PasskeyError};
pub use service::{
    ATTEMPTS_PER_MINUTE_PER_ACCOUNT, ATTEMPTS_PER_MINUTE_PER_ADDRESS, AccountError, Accounts,
    AdminSetup, LOCK_AFTER, MAX_PASSWORD_LEN, MAX_WHO_LEN, RESETS_PER_HOUR, TICKET_LIFETIME,
};
pub use sharing::{
    AccountId, Group, GroupMember, Role, Share, ShareError, SharePolicy, account_names,
    find_account, revoke_grants, set_group, share, unshare,
};
pub use tokens::{ApiToken, TokenAuthenticator};
