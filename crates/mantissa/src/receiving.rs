//! Who the site receives mail for (the inbound SMTP server's
//! [`Recipients`], which `mantissa-mail` leaves to the site since it knows
//! no accounts): at the site's mail domain (that of its sender address,
//! `mantissa mail set --from`), `USER@domain` for each active account,
//! whose store the message goes into, and the site's VERP return paths
//! (`bounces+…@domain`), which go to the bounce processing. Nothing else:
//! the server relays for nobody.

use mantissa_accounts::Account;
use mantissa_accounts::model::status;
use mantissa_mail::inbound::{Destination, DestinationFuture, Recipients};
use mantissa_store::Site;

/// The site's recipients at `domain`.
pub struct SiteRecipients {
    site: Site,
    domain: String,
}

impl SiteRecipients {
    /// Mail to `domain` (compared without case) for `site`'s accounts.
    pub fn new(site: Site, domain: &str) -> SiteRecipients {
        SiteRecipients {
            site,
            domain: domain.to_ascii_lowercase(),
        }
    }
}

impl Recipients for SiteRecipients {
    fn destination(&self, address: &str) -> DestinationFuture {
        let address = address.trim().to_ascii_lowercase();
        let (site, domain) = (self.site.clone(), self.domain.clone());
        Box::pin(async move {
            let (local, at) = address.rsplit_once('@')?;
            if at != domain || local.is_empty() {
                return None;
            }
            if mantissa_mail_proto::verp::decode(&address).is_some() {
                return Some(Destination::Bounces);
            }
            let name = local.to_string();
            let account = site
                .store()
                .read(move |r| {
                    r.query::<Account>()
                        .filter(Account::username.eq(name.as_str()))
                        .first()
                })
                .await
                .ok()??;
            (account.status == status::ACTIVE).then(|| Destination::User(account.username.clone()))
        })
    }
}
