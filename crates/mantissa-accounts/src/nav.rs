//! The navigation and the first-run steps, as the accounts know them: a
//! signed-in user's applications are the offerings of their product (the
//! offerings installed in their store), an administrator gets an Admin
//! link, visitors a Sign up link while anyone may sign up; and on a new
//! site the front page tells the administrator what to do next
//! ([`mantissa_web::FirstRun`]).

use std::sync::Arc;

use mantissa_web::{App, FirstRun, FirstRunFuture, Menu, MenuFuture, Navigation, Port, Step};

use crate::model::{Account, Product, SignupPolicy, status};
use crate::service::Accounts;

/// The accounts' [`Navigation`].
pub(crate) struct AccountsNavigation(pub(crate) Arc<Accounts>);

/// Where a log-in lands when `next` says nowhere: the user's first
/// application, or their settings when they have none.
pub(crate) async fn landing(app: &App, user: &str) -> String {
    app.menu(Some(user.to_string()))
        .await
        .apps
        .into_iter()
        .next()
        .map(|a| a.href)
        .unwrap_or_else(|| crate::pages::HOME.to_string())
}

impl Navigation for AccountsNavigation {
    fn menu(&self, app: App, user: Option<String>) -> MenuFuture {
        let accounts = self.0.clone();
        Box::pin(async move {
            let Some(user) = user else {
                let signup_open = match accounts.signup_mechanism().await {
                    Ok(m) => m == "open" || m == "approval",
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the sign-up mechanism");
                        false
                    }
                };
                return Menu {
                    signup_open,
                    ..Menu::default()
                };
            };
            let linked: Vec<String> = app
                .offerings()
                .iter()
                .map(|o| o.name().to_string())
                .collect();
            let found = app
                .site()
                .store()
                .read(move |r| -> mantissa_store::Result<_> {
                    let Some(a) = r
                        .query::<Account>()
                        .filter(Account::username.eq(user))
                        .first()?
                    else {
                        return Ok(None);
                    };
                    let product = r
                        .query::<Product>()
                        .filter(Product::joined_by.eq(a.joined_by.clone()))
                        .first()?;
                    Ok(Some((a.into_inner(), product.map(|p| p.into_inner()))))
                })
                .await;
            let (account, product) = match found {
                Ok(Some(found)) => found,
                Ok(None) => return Menu::default(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read an account for the navigation");
                    return Menu::default();
                }
            };
            // The product names what was installed; without one, every
            // linked offering was.
            let names: Vec<String> = match product {
                Some(p) => p.offering_names(),
                None => linked,
            };
            Menu {
                apps: mantissa_web::applications(&app, &names).await,
                admin: account.admin && account.status == status::ACTIVE,
                signup_open: false,
            }
        })
    }

    fn first_run(&self, app: App, user: Option<String>) -> FirstRunFuture {
        Box::pin(async move {
            let site_name = app.config().name;
            let found = app
                .site()
                .store()
                .read(move |r| -> mantissa_store::Result<_> {
                    let admins = r.query::<Account>().filter(Account::admin.eq(true)).all()?;
                    let accounts = r.query::<Account>().count()?;
                    let chosen = r.query::<SignupPolicy>().first()?.is_some();
                    let public_port = r.query::<Port>().all()?.iter().any(|p| {
                        p.address
                            .parse::<std::net::SocketAddr>()
                            .is_ok_and(|a| !a.ip().is_loopback())
                    });
                    Ok((admins, accounts, chosen, public_port))
                })
                .await;
            let (admins, accounts, chosen, public_port) = match found {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the site's first-run state");
                    return None;
                }
            };
            let first = admins.first()?;
            let password_set = admins.iter().any(|a| a.password_hash.is_some());
            let is_admin = user
                .as_deref()
                .is_some_and(|u| admins.iter().any(|a| a.username == u));
            let steps = vec![
                Step {
                    title: "Set the administrator's password".into(),
                    text: format!(
                        "Open the link that the server printed on its terminal when it started \
                         (\u{201c}Set the administrator's password (once): \u{2026}\u{201d}), choose a \
                         password, then log in as \u{201c}{}\u{201d}. Lost the link? Start the server \
                         again: it prints a new one until the password is set.",
                        first.username
                    ),
                    command: None,
                    href: None,
                    done: password_set,
                },
                Step {
                    title: "Add a port with your domain".into(),
                    text: format!(
                        "So far {site_name} listens on this computer only. Point your domain at \
                         the server, add a public port with the domain's TLS certificate, and \
                         start the server with its address, so that links in mail lead there."
                    ),
                    command: Some(
                        "mantissa port add https 0.0.0.0:443 --cert fullchain.pem --key privkey.pem\n\
                         mantissa serve --url https://your.domain/"
                            .into(),
                    ),
                    href: None,
                    done: public_port,
                },
                Step {
                    title: "Choose how people join".into(),
                    text: "Sign-up is closed until you choose: open to anyone, open with your \
                           approval of each account, or by invitation only."
                        .into(),
                    command: Some("mantissa signup set invitation".into()),
                    href: Some("/admin".into()),
                    done: chosen,
                },
                Step {
                    title: "Invite people".into(),
                    text: "Make accounts for people in the admin console, or send them \
                           invitation links."
                        .into(),
                    command: Some("mantissa signup invite".into()),
                    href: Some("/admin".into()),
                    done: accounts > admins.len() as u64,
                },
            ];
            let unfinished = steps.iter().any(|s| !s.done);
            let shown = !password_set || (is_admin && unfinished);
            shown.then(|| FirstRun {
                admin: first.username.clone(),
                password_set,
                steps,
            })
        })
    }
}
