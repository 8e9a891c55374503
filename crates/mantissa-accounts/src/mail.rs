//! The mails accounts send, written as templates that a theme can
//! override, as it overrides a page.
//!
//! A mail template is a text file under `mail/` (`mail/welcome.txt`, …)
//! whose first line is `Subject: …` and whose body follows a blank line. It
//! is looked up first in the site's theme
//! (`<site>/themes/<theme>/templates/mail/…`), then among the templates
//! below, with the same engine as pages ([`mantissa_web::Templates`]) but
//! without HTML escaping (the name ends in `.txt`). Every template gets
//! `site.name`, `base_url` and what its mail is about (`username`, `link`,
//! …). A theme's template that fails to render is logged and the built-in
//! one is sent instead: a typo in a theme must not stop password resets.

use std::collections::HashMap;
use std::sync::Arc;

use mantissa_store::Site;
use mantissa_web::{SiteConfig, TemplateSources, Templates};
use serde_json::{Value, json};

/// The built-in mail templates, by name.
pub const MAIL_TEMPLATES: &[(&str, &str)] = &[
    (
        "mail/verify.txt",
        include_str!("../templates/mail/verify.txt"),
    ),
    (
        "mail/reset.txt",
        include_str!("../templates/mail/reset.txt"),
    ),
    (
        "mail/signup_again.txt",
        include_str!("../templates/mail/signup_again.txt"),
    ),
    (
        "mail/welcome.txt",
        include_str!("../templates/mail/welcome.txt"),
    ),
    (
        "mail/awaiting_approval.txt",
        include_str!("../templates/mail/awaiting_approval.txt"),
    ),
    (
        "mail/approved.txt",
        include_str!("../templates/mail/approved.txt"),
    ),
    (
        "mail/email_change.txt",
        include_str!("../templates/mail/email_change.txt"),
    ),
    (
        "mail/email_changed.txt",
        include_str!("../templates/mail/email_changed.txt"),
    ),
    (
        "mail/two_factor_off.txt",
        include_str!("../templates/mail/two_factor_off.txt"),
    ),
];

/// A mail's subject and text, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    /// The subject line.
    pub subject: String,
    /// The body, plain text.
    pub text: String,
}

fn builtin() -> Arc<HashMap<String, &'static str>> {
    Arc::new(
        MAIL_TEMPLATES
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect(),
    )
}

/// Splits a rendered template into its subject line and body.
fn split(rendered: &str) -> Option<MailText> {
    let rest = rendered.trim_start().strip_prefix("Subject:")?;
    let (subject, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let subject = subject.trim();
    if subject.is_empty() {
        return None;
    }
    let mut text = body.trim_start_matches(['\r', '\n']).to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Some(MailText {
        subject: subject.to_string(),
        text,
    })
}

/// The site's name and its theme's template folder, as the store has
/// them now (a theme chosen since the server started counts).
pub(crate) async fn site_and_theme(site: &Site) -> (String, Option<std::path::PathBuf>) {
    let config = site
        .store()
        .read(|r| r.query::<SiteConfig>().first())
        .await
        .ok()
        .flatten();
    let (site_name, theme) = match config {
        Some(c) => (c.name.clone(), c.theme.clone()),
        None => ("this site".to_string(), None),
    };
    let theme_dir = theme
        .filter(|t| !t.is_empty() && !t.contains(['/', '\\']) && !t.starts_with('.'))
        .map(|t| site.root().join("themes").join(t).join("templates"));
    (site_name, theme_dir)
}

/// Renders mail template `name` ([`compose`]) and sends it from `from` to
/// `to` through `mailer`: every mail the accounts send goes this way.
pub(crate) async fn send(
    site: &Site,
    base_url: &str,
    mailer: &dyn mantissa_mail::Mailer,
    from: &str,
    to: &str,
    name: &str,
    ctx: Value,
) -> Result<(), mantissa_mail::MailError> {
    let mail = compose(site, base_url, name, ctx).await;
    mailer
        .send(mantissa_mail::OutgoingMail {
            from: from.to_string(),
            to: vec![to.to_string()],
            subject: mail.subject,
            text: mail.text,
        })
        .await
}

/// Renders mail template `name` of the site's theme (or the built-in one)
/// with `ctx`, to which `site.name` and `base_url` are added.
pub(crate) async fn compose(site: &Site, base_url: &str, name: &str, mut ctx: Value) -> MailText {
    let (site_name, theme_dir) = site_and_theme(site).await;
    if let Value::Object(map) = &mut ctx {
        map.insert("site".into(), json!({ "name": site_name }));
        map.insert("base_url".into(), json!(base_url));
    }
    let value = minijinja::Value::from_serialize(&ctx);
    if theme_dir.is_some() {
        let themed = Templates::new(
            TemplateSources {
                theme_dir,
                builtin: builtin(),
                source_dirs: Vec::new(),
            },
            false,
            vec![],
        );
        match themed.render(name, &value).map(|r| split(&r)) {
            Ok(Some(mail)) => return mail,
            Ok(None) => {
                tracing::error!(
                    template = name,
                    "a theme's mail template has no Subject: line; the built-in one is sent"
                )
            }
            Err(e) => {
                tracing::error!(template = name, error = %e, "a theme's mail template failed; the built-in one is sent")
            }
        }
    }
    let plain = Templates::new(
        TemplateSources {
            theme_dir: None,
            builtin: builtin(),
            source_dirs: Vec::new(),
        },
        false,
        vec![],
    );
    plain
        .render(name, &value)
        .ok()
        .and_then(|r| split(&r))
        .expect("the built-in mail templates render")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_template_is_a_subject_line_and_a_body() {
        assert_eq!(
            split("Subject: Hi there\n\nBody line\n"),
            Some(MailText {
                subject: "Hi there".into(),
                text: "Body line\n".into()
            })
        );
        assert_eq!(split("No subject\n\nBody"), None);
        assert_eq!(split("Subject:   \n\nBody"), None);
    }

    #[test]
    fn every_built_in_mail_renders_and_a_theme_overrides_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let site = Site::open(dir.path().join("site")).unwrap();
        let mut config = SiteConfig::default_for("Ann's <Place>");
        config.theme = Some("plain".into());
        SiteConfig::save(&site, config).unwrap();
        let ctx = || json!({ "username": "ann", "link": "http://x/l", "old": "a@b.c", "new": "d@e.f", "verified": true, "by_admin": true });
        for (name, _) in MAIL_TEMPLATES {
            let mail = rt.block_on(compose(&site, "http://x", name, ctx()));
            assert!(!mail.subject.is_empty(), "{name}");
            assert!(!mail.text.contains("&lt;"), "{name}: not escaped");
        }
        let welcome = rt.block_on(compose(&site, "http://x", "mail/welcome.txt", ctx()));
        assert_eq!(welcome.subject, "Welcome to Ann's <Place>, ann");
        assert!(welcome.text.contains("http://x/l"), "{}", welcome.text);
        let themed = site.root().join("themes/plain/templates/mail");
        std::fs::create_dir_all(&themed).unwrap();
        std::fs::write(
            themed.join("welcome.txt"),
            "Subject: Hello from {{ site.name }}\n\nYour name: {{ username }}.",
        )
        .unwrap();
        let welcome = rt.block_on(compose(&site, "http://x", "mail/welcome.txt", ctx()));
        assert_eq!(welcome.subject, "Hello from Ann's <Place>");
        assert_eq!(welcome.text, "Your name: ann.\n");
        // A broken theme template: the built-in one goes out.
        std::fs::write(themed.join("welcome.txt"), "Subject: {% if %}").unwrap();
        let welcome = rt.block_on(compose(&site, "http://x", "mail/welcome.txt", ctx()));
        assert_eq!(welcome.subject, "Welcome to Ann's <Place>, ann");
    }
}
