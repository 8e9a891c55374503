//! The site's web configuration, kept as one item in the site store.
//!
//! Version 2 added what a site behind TLS or a reverse proxy needs:
//! `Strict-Transport-Security` on TLS ports ([`SiteConfig::hsts_max_age`]),
//! the proxies whose `X-Forwarded-For` / `Forwarded` is believed
//! ([`SiteConfig::trusted_proxies`]) and who may read `/metrics`
//! ([`SiteConfig::metrics_from`]). Its upgrader also makes the default
//! `robots.txt` of version 1 disallow `/admin` itself, not only what is
//! under `/admin/`.

use std::net::IpAddr;

use mantissa_store::{Item, Site, StoreError, upgrader};

/// What the front page and the crawlers see. One per site.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.site_config", version = 2)]
pub struct SiteConfig {
    /// The site's name, shown on every page.
    pub name: String,
    /// A line under the name on the front page.
    pub tagline: String,
    /// A contact address shown on the front page (obfuscated against
    /// harvesters), if any.
    pub contact: Option<String>,
    /// The theme folder under `<site>/themes/`, if not the default.
    pub theme: Option<String>,
    /// The text of `/robots.txt`.
    pub robots: String,
    /// Seconds between requests asked of crawlers (and enforced).
    pub crawl_delay: i64,
    /// The `max-age` of `Strict-Transport-Security`, sent on answers over
    /// TLS (never over plain HTTP, where browsers ignore it); 0 sends none.
    #[item(default = 31536000)]
    pub hsts_max_age: i64,
    /// Reverse proxies (addresses or CIDR blocks, separated by commas or
    /// spaces) whose `X-Forwarded-For` or `Forwarded` header names the
    /// client. From any other peer those headers are ignored: anyone can
    /// write them.
    #[item(default = "")]
    pub trusted_proxies: String,
    /// Who may read `/metrics` (addresses or CIDR blocks, as above); none
    /// when empty, the default.
    #[item(default = "")]
    pub metrics_from: String,
}

/// The default `robots.txt` of version 1, which left `/admin` itself open.
const ROBOTS_V1: &str =
    "User-agent: *\nCrawl-delay: 1\nDisallow: /private/\nDisallow: /api/\nDisallow: /admin/\n";

/// The default `robots.txt`. `Disallow: /admin` covers `/admin` and all
/// below it (robots.txt rules are prefixes).
pub const DEFAULT_ROBOTS: &str =
    "User-agent: *\nCrawl-delay: 1\nDisallow: /private/\nDisallow: /api/\nDisallow: /admin\n";

upgrader!(SiteConfig, 1, |item| {
    let robots: String = item.get("robots")?;
    // Only the untouched default: an operator's own text is theirs.
    if robots == ROBOTS_V1 {
        item.set("robots", DEFAULT_ROBOTS.to_string());
    }
    item.set("hsts_max_age", 31_536_000i64);
    item.set("trusted_proxies", String::new());
    item.set("metrics_from", String::new());
    Ok(())
});

/// A bad list of addresses in the site's configuration.
#[derive(Debug, thiserror::Error)]
#[error("{entry:?} is not an IP address or a CIDR block (like 10.0.0.0/8)")]
pub struct AddressListError {
    /// The entry that is neither.
    pub entry: String,
}

/// A list of addresses and CIDR blocks: `127.0.0.1, 10.0.0.0/8, ::1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList(Vec<(IpAddr, u8)>);

impl AddressList {
    /// Parses a list separated by commas or white space.
    ///
    /// ```
    /// use mantissa_web::AddressList;
    ///
    /// let l = AddressList::parse("127.0.0.1, 10.0.0.0/8").unwrap();
    /// assert!(l.contains("10.1.2.3".parse().unwrap()));
    /// assert!(!l.contains("127.0.0.2".parse().unwrap()));
    /// assert!(AddressList::parse("10.0.0.0/33").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<AddressList, AddressListError> {
        let bad = |e: &str| AddressListError {
            entry: e.to_string(),
        };
        let mut out = Vec::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let (addr, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad(entry))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| bad(entry))?,
            };
            out.push((addr, bits));
        }
        Ok(AddressList(out))
    }

    /// Whether `ip` is in the list (an IPv4 address given as IPv6-mapped
    /// counts as itself).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl SiteConfig {
    /// What pages may show of it.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name, "tagline": self.tagline, "contact": self.contact })
    }

    /// The configuration a new site starts with.
    pub fn default_for(name: &str) -> SiteConfig {
        SiteConfig {
            name: name.to_string(),
            tagline: "A site running on Mantissa.".into(),
            contact: None,
            theme: None,
            robots: DEFAULT_ROBOTS.into(),
            crawl_delay: 1,
            hsts_max_age: 31_536_000,
            trusted_proxies: String::new(),
            metrics_from: String::new(),
        }
    }

    /// The site's configuration, creating the default one (named after the
    /// site's folder) on first use.
    pub fn load_or_init(site: &Site) -> Result<SiteConfig, StoreError> {
        if let Some(c) = site
            .store()
            .read_blocking(|r| r.query::<SiteConfig>().first())?
        {
            return Ok(c.into_inner());
        }
        let name = site
            .root()
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "Mantissa".into());
        let config = SiteConfig::default_for(&name);
        let stored = config.clone();
        site.store()
            .write_blocking(move |tx| -> mantissa_store::Result<_> {
                if tx.query::<SiteConfig>().count()? == 0 {
                    tx.insert(&stored)?;
                }
                Ok(())
            })?;
        Ok(config)
    }

    /// Replaces the site's configuration.
    pub fn save(site: &Site, config: SiteConfig) -> Result<(), StoreError> {
        site.store()
            .write_blocking(move |tx| tx.put_only(config).map(drop))
    }
}
