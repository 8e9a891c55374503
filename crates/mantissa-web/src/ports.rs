//! Listening ports, as items in the site store: `mantissa port add http
//! 0.0.0.0:80` writes one, and `mantissa serve` listens on each.
//!
//! They are the site's configuration, like [`SiteConfig`](crate::SiteConfig),
//! and live here rather than in `mantissa-server`, which knows no database:
//! the server is handed plain addresses and TLS settings
//! ([`Server::listen`](mantissa_server::Server::listen)). Issue 15 calls them
//! configuration of the `mantissa` crate, but `mantissa-accounts` reads them
//! too (the first-run steps, the admin console's ports page) and sits below
//! that facade, so they are kept in the lowest crate both see. The item kept
//! its name (`mantissa.port`), version and fields when it moved, so sites'
//! stores read the same table with no migration.

use std::net::SocketAddr;

use mantissa_store::{Item, Site, StoreError};

/// A port the server listens on.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.port", version = 1, unique(protocol, address))]
pub struct Port {
    /// `http`, `https`, or another protocol's name.
    pub protocol: String,
    /// The address to bind, e.g. `127.0.0.1:8080`.
    pub address: String,
    /// For TLS ports: the PEM certificate chain file.
    pub cert: Option<String>,
    /// For TLS ports: the PEM private key file.
    pub key: Option<String>,
}

/// A port that cannot be added, or removed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The protocol is not one the server speaks.
    #[error("unknown protocol {0:?}; use one of: {1}")]
    UnknownProtocol(String, String),
    /// The address does not parse.
    #[error("{0:?} is not an address to listen on (expected IP:PORT, like 127.0.0.1:8080)")]
    BadAddress(String),
    /// A TLS protocol without a certificate and key, or a plain one with them.
    #[error("{0}")]
    Tls(String),
    /// No such port.
    #[error("no {0} port on {1}")]
    NotFound(String, String),
    /// The site has a port on that address already (for this protocol or
    /// another: one address serves one protocol).
    #[error("a port for {protocol} on {address} exists already")]
    Exists {
        /// The existing port's protocol.
        protocol: String,
        /// The existing port's address, as it was added.
        address: String,
    },
    /// The address would share its port with one the site listens on
    /// already, one of them on every address of the machine.
    #[error(
        "{asked} overlaps the port for {protocol} on {address} (one of them listens on every address): remove that one first"
    )]
    Overlaps {
        /// The address asked for.
        asked: String,
        /// The existing port's protocol.
        protocol: String,
        /// The existing port's address.
        address: String,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a protocol uses a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never (`http`).
    None,
    /// TLS from the first byte (`https`).
    Implicit,
    /// Upgraded in the session by STARTTLS (`smtp`, `submission`); whether
    /// a certificate is required (submission: a log-in must not travel in
    /// the clear) or offered when given (smtp: senders fall back to the
    /// clear where it is not).
    StartTls {
        /// Whether the port needs a certificate.
        required: bool,
    },
}

/// How each protocol this crate knows of uses TLS; any other is plain.
const TLS_MODES: &[(&str, TlsMode)] = &[
    ("https", TlsMode::Implicit),
    ("smtp", TlsMode::StartTls { required: false }),
    ("submission", TlsMode::StartTls { required: true }),
];

/// How `protocol` uses TLS.
pub fn tls_mode(protocol: &str) -> TlsMode {
    TLS_MODES
        .iter()
        .find(|(p, _)| *p == protocol)
        .map_or(TlsMode::None, |(_, m)| *m)
}

impl Port {
    /// Checks a port before it is stored. `known` lists the protocols this
    /// binary serves.
    pub fn validate(&self, known: &[&str]) -> Result<SocketAddr, PortError> {
        if !known.contains(&self.protocol.as_str()) {
            return Err(PortError::UnknownProtocol(
                self.protocol.clone(),
                known.join(", "),
            ));
        }
        let addr: SocketAddr = self
            .address
            .parse()
            .map_err(|_| PortError::BadAddress(self.address.clone()))?;
        let mode = tls_mode(&self.protocol);
        let required = matches!(
            mode,
            TlsMode::Implicit | TlsMode::StartTls { required: true }
        );
        match (mode, &self.cert, &self.key) {
            (TlsMode::None, None, None) => {}
            (TlsMode::None, _, _) => {
                return Err(PortError::Tls(format!(
                    "{} does not use a certificate; did you mean https?",
                    self.protocol
                )));
            }
            (_, Some(c), Some(k)) => {
                mantissa_server::load_tls(c.as_ref(), k.as_ref())
                    .map_err(|e| PortError::Tls(e.to_string()))?;
            }
            (_, None, None) if !required => {}
            _ => {
                return Err(PortError::Tls(format!(
                    "{} needs --cert FILE and --key FILE",
                    self.protocol
                )));
            }
        }
        Ok(addr)
    }

    /// Whether this port speaks TLS from its first byte.
    pub fn is_tls(&self) -> bool {
        tls_mode(&self.protocol) == TlsMode::Implicit
    }

    /// Whether this port offers STARTTLS: a protocol that upgrades in the
    /// session, with a certificate given.
    pub fn starttls(&self) -> bool {
        matches!(tls_mode(&self.protocol), TlsMode::StartTls { .. }) && self.cert.is_some()
    }

    /// Every port of the site, in the order they were added.
    pub fn list(site: &Site) -> Result<Vec<Port>, StoreError> {
        site.store().read_blocking(|r| {
            Ok(r.query::<Port>()
                .all()?
                .into_iter()
                .map(|p| p.into_inner())
                .collect())
        })
    }

    /// Adds a port after checking it.
    /// Refuses a port on an address the site listens on already, whatever
    /// its protocol and however the address is written (`[::1]:80` and
    /// `[0:0:0:0:0:0:0:1]:80` are one).
    pub fn add(site: &Site, port: Port, known: &[&str]) -> Result<(), PortError> {
        let addr = port.validate(known)?;
        site.store().write_blocking(move |tx| {
            for p in tx.query::<Port>().all()? {
                let Ok(other) = p.address.parse::<SocketAddr>() else {
                    continue;
                };
                let (protocol, address) = (p.protocol.clone(), p.address.clone());
                if other == addr {
                    return Ok(Err(PortError::Exists { protocol, address }));
                }
                // 0.0.0.0:80 and 127.0.0.1:80 cannot both be listened on.
                let overlap = other.port() == addr.port()
                    && other.is_ipv4() == addr.is_ipv4()
                    && (other.ip().is_unspecified() || addr.ip().is_unspecified());
                if overlap {
                    return Ok(Err(PortError::Overlaps {
                        asked: port.address.clone(),
                        protocol,
                        address,
                    }));
                }
            }
            tx.insert(&port).map(|_| Ok(()))
        })?
    }

    /// Removes the port for `protocol` on `address`.
    pub fn remove(site: &Site, protocol: &str, address: &str) -> Result<(), PortError> {
        let (p, a) = (protocol.to_string(), address.to_string());
        let removed = site.store().write_blocking(move |tx| {
            tx.delete_where(Port::protocol.eq(p).and(Port::address.eq(a)))
        })?;
        if removed == 0 {
            return Err(PortError::NotFound(protocol.into(), address.into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sites' stores hold ports written when the item lived in
    /// `mantissa-server`: it must read the same table, so its name, version
    /// and fields (all four named below, as a literal must) stay as they were.
    #[test]
    fn the_item_keeps_the_table_it_had_in_the_server() {
        assert_eq!(<Port as Item>::NAME, "mantissa.port");
        assert_eq!(<Port as Item>::VERSION, 1);
        let _ = Port {
            protocol: String::new(),
            address: String::new(),
            cert: None,
            key: None,
        };
    }
}
