//! Who the site receives mail for (the inbound SMTP server's
//! [`Recipients`], which `mantissa-mail` leaves to the site since it knows
//! no accounts): at the site's mail domain (that of its sender address,
//! `mantissa mail set --from`), `USER@domain` for each active account,
//! whose store the message goes into, the site's VERP return paths
//! (`bounces+…@domain`), which go to the bounce processing, and
//! `dmarc-reports@domain`, DMARC aggregate reports; `postmaster@` and
//! `abuse@` reach the administrator (RFC 5321 §4.5.1). Nothing else: the
//! server relays for nobody (but people logged in on a submission port).

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
            if local == mantissa_mail::dmarc::REPORTS {
                return Some(Destination::DmarcReports);
            }
            if mantissa_mail::inbound::TO_ADMINISTRATOR.contains(&local) {
                let admin = site
                    .store()
                    .read(|r| {
                        r.query::<Account>()
                            .filter(Account::admin.eq(true))
                            .filter(Account::status.eq(status::ACTIVE))
                            .first()
                    })
                    .await
                    .ok()??;
                return Some(Destination::User(admin.username.clone()));
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

/// What the site's submission port (587) does: logs people in as the web
/// does (the same back-offs; an account with two-factor log-in cannot use
/// its password alone here), lets each send as `USER@domain` only, and
/// sends through the site's mail queue.
pub struct SiteSubmission {
    accounts: std::sync::Arc<mantissa_accounts::Accounts>,
    queue: Option<mantissa_mail::MailQueue>,
    domain: String,
}

impl SiteSubmission {
    /// Submission for `accounts`, sending through `queue` (none: the site
    /// has no relay, and refuses to send out).
    pub fn new(
        accounts: std::sync::Arc<mantissa_accounts::Accounts>,
        queue: Option<mantissa_mail::MailQueue>,
        domain: &str,
    ) -> SiteSubmission {
        SiteSubmission {
            accounts,
            queue,
            domain: domain.to_ascii_lowercase(),
        }
    }
}

impl mantissa_mail::inbound::Submission for SiteSubmission {
    fn login(
        &self,
        peer: std::net::IpAddr,
        who: &str,
        password: &str,
    ) -> mantissa_mail::inbound::LoginFuture {
        let accounts = self.accounts.clone();
        let (who, password) = (who.to_string(), password.to_string());
        Box::pin(async move { accounts.login(Some(peer), &who, &password).await.ok() })
    }

    fn submit(
        &self,
        user: &str,
        from: &str,
        to: Vec<String>,
        raw: std::sync::Arc<Vec<u8>>,
    ) -> mantissa_mail::inbound::SubmitFuture {
        let own = format!("{user}@{}", self.domain);
        let from = from.trim().to_string();
        let queue = self.queue.clone();
        Box::pin(async move {
            if !from.eq_ignore_ascii_case(&own) {
                return Err(format!("{from} is not yours to send as: send as {own}"));
            }
            if to.is_empty() {
                return Ok(());
            }
            let Some(queue) = queue else {
                return Err("this site sends no mail out (no relay is set)".into());
            };
            queue
                .enqueue_raw(&own, to, raw.as_ref().clone())
                .await
                .map(drop)
                .map_err(|e| format!("not queued: {e}"))
        })
    }
}
