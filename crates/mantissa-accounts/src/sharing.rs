//! Sharing, in Mantissa's model: a user shares an item of their store with
//! a role — everyone, every signed-in user, one account, or a group the
//! owner defines — granting a set of capabilities (`view`, `comment`,
//! `edit`, …). The owner can do everything. Nothing is visible to anyone
//! else until it is shared.
//!
//! Grants name **accounts by their id**, never by user name: an account's
//! id (its [`Account`] item's id) is never reused, even after the account is
//! deleted, whereas a name is free again once its account is gone. A share
//! kept by name would be inherited by whoever next signs up with that name;
//! a share kept by id dies with its account. [`find_account`] turns a name
//! typed in a form into an id, and refuses names that have no account, so
//! nothing is ever granted to a name nobody holds. Deleting an account
//! removes every share and group membership granted to it
//! ([`revoke_grants`]).
//!
//! [`SharePolicy`] is the site's [`AccessPolicy`]: `mantissa-web` asks it,
//! in one place below every offering, before serving a published item, and
//! answers 404 when the visitor may not view it. It reads only the
//! visitor's own grants on that item, through indexes: the visitor's groups
//! (by [`GroupMember::account`]), then the item's shares for the few roles
//! that can apply to them (by the share's unique (type, id, role) index) —
//! never every share of the item.
//!
//! Version 1 of [`Share`] and [`Group`] named users by name. Their upgraders
//! cannot ask the site store which account a name meant when it was
//! written (and the holder of the name today may be someone else), so they
//! fail closed: a share with `user:NAME` becomes `former-user:NAME`, which
//! grants nothing and is shown to its owner to share again or remove, and a
//! group's member names are dropped.

use std::collections::HashMap;

use mantissa_store::{Item, Ref, Site, Store, StoreError, Stored, Write, upgrader};
use mantissa_web::{AccessPolicy, CapabilitiesFuture, Published, WebError};

use crate::model::Account;

/// A share: who may do what with one item. Kept in the owner's store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.share", version = 2, unique(item_type, item_id, role))]
pub struct Share {
    /// The item's type.
    pub item_type: String,
    /// The item's id.
    pub item_id: i64,
    /// `everyone`, `signed-in`, `account:ID` or `group:NAME` (see
    /// [`Role`]); `former-user:NAME` for a version 1 share by name, which
    /// grants nothing.
    pub role: String,
    /// What the role may do, comma-separated.
    pub capabilities: String,
}

// Version 1 named the user; which account that meant is not knowable in
// the owner's store, so the share is kept for its owner to see but grants
// nothing (see the module docs).
upgrader!(Share, 1, |item| {
    let role: String = item.get("role")?;
    if let Some(name) = role.strip_prefix("user:") {
        item.set("role", format!("former-user:{name}"));
    }
    Ok(())
});

/// A group of accounts that an owner shares with. Kept in the owner's
/// store; its members are [`GroupMember`]s.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.group", version = 2)]
pub struct Group {
    /// The group's name, unique in the owner's store.
    #[item(unique)]
    pub name: String,
}

// Version 1 kept its members' names in a JSON list: dropped, for the reason
// the module docs give.
upgrader!(Group, 1, |item| {
    item.remove("members");
    Ok(())
});

/// One account in one of the owner's groups. Kept in the owner's store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.group_member", version = 1, unique(group, account))]
pub struct GroupMember {
    /// The group.
    #[item(on_delete = "cascade")]
    pub group: Ref<Group>,
    /// The member's account id (in the site store; never reused).
    #[item(index)]
    pub account: i64,
}

/// An account's stable identity: the id of its [`Account`] item, which is
/// never given to another account, even after this one is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);

impl From<Ref<Account>> for AccountId {
    fn from(r: Ref<Account>) -> Self {
        AccountId(r.id())
    }
}

/// Who a share is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Anyone, signed in or not.
    Everyone,
    /// Anyone signed in.
    SignedIn,
    /// One account.
    User(AccountId),
    /// The members of one of the owner's groups.
    Group(String),
    /// A user named in a version 1 share, before shares named accounts by
    /// id: grants nothing; kept so that its owner sees it and can remove it.
    FormerUser(String),
}

impl Role {
    /// The role's key, as kept in [`Share::role`].
    pub fn key(&self) -> String {
        match self {
            Role::Everyone => "everyone".into(),
            Role::SignedIn => "signed-in".into(),
            Role::User(AccountId(id)) => format!("account:{id}"),
            Role::Group(g) => format!("group:{g}"),
            Role::FormerUser(u) => format!("former-user:{u}"),
        }
    }

    /// The role a [`Share`]'s `role` names, if it names one.
    ///
    /// ```
    /// use mantissa_accounts::{AccountId, Role};
    ///
    /// assert_eq!(Role::from_key("account:7"), Some(Role::User(AccountId(7))));
    /// assert_eq!(Role::from_key("signed-in"), Some(Role::SignedIn));
    /// assert_eq!(Role::from_key("account:bob"), None);
    /// assert_eq!(Role::from_key("user:bob"), None);
    /// ```
    pub fn from_key(key: &str) -> Option<Role> {
        match key {
            "everyone" => Some(Role::Everyone),
            "signed-in" => Some(Role::SignedIn),
            _ => match key.split_once(':') {
                Some(("account", id)) => id.parse().ok().map(|id| Role::User(AccountId(id))),
                Some(("group", g)) if !g.is_empty() => Some(Role::Group(g.into())),
                Some(("former-user", u)) if !u.is_empty() => Some(Role::FormerUser(u.into())),
                _ => None,
            },
        }
    }
}

/// Why a share cannot be made: with a user name, or at all.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Nobody has an account by that name.
    #[error("there is no user called {name:?}")]
    NoSuchUser {
        /// The name as given.
        name: String,
    },
    /// A share with a role kept from when shares were made by user name:
    /// a name may belong to someone else tomorrow.
    #[error("a share by user name cannot be made any more; share with an account")]
    ByName,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ShareError> for WebError {
    fn from(e: ShareError) -> WebError {
        match e {
            e @ ShareError::NoSuchUser { .. } => WebError::Unprocessable(e.to_string()),
            // The offering's own mistake, not the person's.
            e @ ShareError::ByName => WebError::Internal(e.to_string()),
            ShareError::Store(e) => e.into(),
        }
    }
}

/// The account called `name` (trimmed), refused when there is none: a
/// share must never wait for a name that someone may sign up with later.
pub fn find_account(site: &Site, name: &str) -> Result<AccountId, ShareError> {
    let name = name.trim().to_string();
    let found = site.store().read_blocking({
        let name = name.clone();
        move |r| {
            r.query::<Account>()
                .filter(Account::username.eq(name))
                .ids()
        }
    })?;
    found
        .first()
        .map(|r| AccountId::from(*r))
        .ok_or(ShareError::NoSuchUser { name })
}

/// The user names of `ids` (those whose accounts still exist), to show
/// shares and groups to their owner.
pub fn account_names(
    site: &Site,
    ids: &[AccountId],
) -> Result<HashMap<AccountId, String>, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|a| a.0).collect();
    site.store().read_blocking(move |r| {
        let mut names = HashMap::new();
        for id in ids {
            if let Some(a) = r.find(Ref::<Account>::from_id(id))? {
                names.insert(AccountId(id), a.username.clone());
            }
        }
        Ok(names)
    })
}

/// Shares `item` with `role`, granting `capabilities` (replacing what that
/// role had).
pub fn share<T: Item>(
    tx: &mut Write<'_>,
    item: Ref<T>,
    role: Role,
    capabilities: &[&str],
) -> Result<(), ShareError> {
    if let Role::FormerUser(_) = role {
        return Err(ShareError::ByName);
    }
    unshare(tx, item, role.clone())?;
    tx.insert(&Share {
        item_type: T::NAME.into(),
        item_id: item.id(),
        role: role.key(),
        capabilities: capabilities.join(","),
    })?;
    Ok(())
}

/// Stops sharing `item` with `role`.
pub fn unshare<T: Item>(
    tx: &mut Write<'_>,
    item: Ref<T>,
    role: Role,
) -> mantissa_store::Result<()> {
    tx.delete_where(
        Share::item_type
            .eq(T::NAME)
            .and(Share::item_id.eq(item.id()))
            .and(Share::role.eq(role.key())),
    )?;
    Ok(())
}

/// Defines (or redefines) one of the owner's groups.
pub fn set_group(
    tx: &mut Write<'_>,
    name: &str,
    members: &[AccountId],
) -> mantissa_store::Result<()> {
    // Deleting the group deletes its members (cascade).
    tx.delete_where(Group::name.eq(name))?;
    let group = tx.insert(&Group { name: name.into() })?;
    for m in members {
        tx.insert(&GroupMember {
            group,
            account: m.0,
        })?;
    }
    Ok(())
}

/// Removes every share and group membership granted to `account` in every
/// user store: called when the account is deleted. Ids are never reused, so
/// a grant this misses (a store that could not be opened) can never reach
/// another account; it is logged and the walk goes on.
pub fn revoke_grants(site: &Site, account: AccountId) -> Result<(), StoreError> {
    let key = Role::User(account).key();
    for name in site.user_names()? {
        let Some(store) = site.existing_user_store(&name)? else {
            continue;
        };
        let key = key.clone();
        let done = store.write_blocking(move |tx| -> mantissa_store::Result<_> {
            let shares = tx.delete_where(Share::role.eq(key))?;
            let members = tx.delete_where(GroupMember::account.eq(account.0))?;
            Ok((shares, members))
        });
        match done {
            Ok((0, 0)) => {}
            Ok((shares, members)) => tracing::info!(
                store = %name, account = account.0, shares, members,
                "grants to a deleted account removed"
            ),
            Err(e) => tracing::error!(
                store = %name, account = account.0, error = %e,
                "could not remove grants to a deleted account"
            ),
        }
    }
    Ok(())
}

/// The site's access policy, from shares and groups.
pub struct SharePolicy {
    site: Site,
}

impl SharePolicy {
    /// The policy of `site`, whose site store holds the accounts.
    pub fn new(site: Site) -> Self {
        SharePolicy { site }
    }
}

impl AccessPolicy for SharePolicy {
    fn capabilities(
        &self,
        store: Store,
        owner: String,
        visitor: Option<String>,
        item: Stored<Published>,
    ) -> CapabilitiesFuture {
        let site = self.site.clone();
        Box::pin(async move {
            if visitor.as_deref() == Some(owner.as_str()) {
                return Ok(vec!["*".into()]);
            }
            // The visitor's account, by the name their session holds.
            let account = match visitor {
                None => None,
                Some(name) => site
                    .store()
                    .read(move |r| {
                        r.query::<Account>()
                            .filter(Account::username.eq(name))
                            .ids()
                    })
                    .await
                    .map_err(WebError::from)?
                    .first()
                    .map(|r| AccountId::from(*r)),
            };
            let signed_in = account.is_some();
            let (item_type, item_id) = (item.item_type.clone(), item.item_id);
            let caps = store
                .read(move |r| -> mantissa_store::Result<_> {
                    let mut roles = vec![Role::Everyone.key()];
                    if let Some(a) = account {
                        roles.push(Role::SignedIn.key());
                        roles.push(Role::User(a).key());
                        // The visitor's groups in this store (by the index
                        // on the member's account).
                        for g in r
                            .query::<GroupMember>()
                            .filter(GroupMember::account.eq(a.0))
                            .column(GroupMember::group)?
                        {
                            if let Some(g) = r.find(g)? {
                                roles.push(Role::Group(g.name.clone()).key());
                            }
                        }
                    }
                    let shares = r
                        .query::<Share>()
                        .filter(Share::item_type.eq(item_type))
                        .filter(Share::item_id.eq(item_id))
                        .filter(Share::role.is_in(roles))
                        .all()?;
                    let mut caps: Vec<String> = Vec::new();
                    for s in shares {
                        if s.role == Role::SignedIn.key() && !signed_in {
                            continue;
                        }
                        for c in s.capabilities.split(',').filter(|c| !c.is_empty()) {
                            if !caps.iter().any(|x| x == c) {
                                caps.push(c.to_string());
                            }
                        }
                    }
                    Ok(caps)
                })
                .await
                .map_err(WebError::from)?;
            Ok(caps)
        })
    }
}
