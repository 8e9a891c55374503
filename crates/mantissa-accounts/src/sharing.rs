//! Sharing, in Mantissa's model: a user shares an item of their store with
//! a role — everyone, every signed-in user, a named user, or a group the
//! owner defines — granting a set of capabilities (`view`, `comment`,
//! `edit`, …). The owner can do everything. Nothing is visible to anyone
//! else until it is shared.
//!
//! [`SharePolicy`] is the site's [`AccessPolicy`]: `mantissa-web` asks it,
//! in one place below every offering, before serving a published item, and
//! answers 404 when the visitor may not view it.

use mantissa_store::{Item, Ref, Store, Stored, Write};
use mantissa_web::{AccessPolicy, CapabilitiesFuture, Published, WebError};

/// A share: who may do what with one item. Kept in the owner's store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.share", version = 1, unique(item_type, item_id, role))]
pub struct Share {
    /// The item's type.
    pub item_type: String,
    /// The item's id.
    pub item_id: i64,
    /// `everyone`, `signed-in`, `user:NAME` or `group:NAME`.
    pub role: String,
    /// What the role may do, comma-separated.
    pub capabilities: String,
}

/// A group of users that an owner shares with. Kept in the owner's store.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.group", version = 1)]
pub struct Group {
    /// The group's name, unique in the owner's store.
    #[item(unique)]
    pub name: String,
    /// Its members' user names.
    pub members: serde_json::Value,
}

/// Who a share is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Anyone, signed in or not.
    Everyone,
    /// Anyone signed in.
    SignedIn,
    /// One user.
    User(String),
    /// The members of one of the owner's groups.
    Group(String),
}

impl Role {
    fn key(&self) -> String {
        match self {
            Role::Everyone => "everyone".into(),
            Role::SignedIn => "signed-in".into(),
            Role::User(u) => format!("user:{u}"),
            Role::Group(g) => format!("group:{g}"),
        }
    }

    /// The role a [`Share`]'s `role` names, if it names one.
    ///
    /// ```
    /// use mantissa_accounts::Role;
    ///
    /// assert_eq!(Role::from_key("user:bob"), Some(Role::User("bob".into())));
    /// assert_eq!(Role::from_key("signed-in"), Some(Role::SignedIn));
    /// assert_eq!(Role::from_key("user:"), None);
    /// ```
    pub fn from_key(key: &str) -> Option<Role> {
        match key {
            "everyone" => Some(Role::Everyone),
            "signed-in" => Some(Role::SignedIn),
            _ => match key.split_once(':') {
                Some(("user", u)) if !u.is_empty() => Some(Role::User(u.into())),
                Some(("group", g)) if !g.is_empty() => Some(Role::Group(g.into())),
                _ => None,
            },
        }
    }
}

/// Shares `item` with `role`, granting `capabilities` (replacing what that
/// role had).
pub fn share<T: Item>(
    tx: &mut Write<'_>,
    item: Ref<T>,
    role: Role,
    capabilities: &[&str],
) -> mantissa_store::Result<()> {
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
pub fn set_group(tx: &mut Write<'_>, name: &str, members: &[&str]) -> mantissa_store::Result<()> {
    tx.delete_where(Group::name.eq(name))?;
    tx.insert(&Group {
        name: name.into(),
        members: serde_json::json!(members),
    })?;
    Ok(())
}

/// The site's access policy, from shares and groups.
pub struct SharePolicy;

impl AccessPolicy for SharePolicy {
    fn capabilities(
        &self,
        store: Store,
        owner: String,
        visitor: Option<String>,
        item: Stored<Published>,
    ) -> CapabilitiesFuture {
        Box::pin(async move {
            if visitor.as_deref() == Some(owner.as_str()) {
                return Ok(vec!["*".into()]);
            }
            let (item_type, item_id) = (item.item_type.clone(), item.item_id);
            let caps = store
                .read(move |r| {
                    let shares = r
                        .query::<Share>()
                        .filter(Share::item_type.eq(item_type))
                        .filter(Share::item_id.eq(item_id))
                        .all()?;
                    let mut caps: Vec<String> = Vec::new();
                    for s in shares {
                        let applies = match (s.role.as_str(), &visitor) {
                            ("everyone", _) => true,
                            ("signed-in", v) => v.is_some(),
                            (role, Some(v)) if role.strip_prefix("user:") == Some(v.as_str()) => {
                                true
                            }
                            (role, Some(v)) => match role.strip_prefix("group:") {
                                Some(g) => r
                                    .query::<Group>()
                                    .filter(Group::name.eq(g))
                                    .first()?
                                    .is_some_and(|grp| {
                                        grp.members.as_array().is_some_and(|m| {
                                            m.iter().any(|x| x.as_str() == Some(v))
                                        })
                                    }),
                                None => false,
                            },
                            _ => false,
                        };
                        if applies {
                            for c in s.capabilities.split(',').filter(|c| !c.is_empty()) {
                                if !caps.iter().any(|x| x == c) {
                                    caps.push(c.to_string());
                                }
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
