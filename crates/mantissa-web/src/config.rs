//! The site's web configuration, kept as one item in the site store.

use mantissa_store::{Item, Site, StoreError};

/// What the front page and the crawlers see. One per site.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.site_config", version = 1)]
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
            robots: "User-agent: *\nCrawl-delay: 1\nDisallow: /private/\nDisallow: /api/\nDisallow: /admin/\n".into(),
            crawl_delay: 1,
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
        site.store().write_blocking(move |tx| {
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
