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
//!
//! A mail may also have an HTML alternative, `mail/<name>.html`, rendered
//! with the same values (and `subject`) but escaped as a page is; it goes
//! as the second part of a `multipart/alternative` message, after the
//! text. Every built-in mail has one (`mail/base.html` is their layout:
//! one column, the language named, real text and links, no images, so
//! that a screen reader or a reader that shows no styles gets the whole
//! message), with the same links as its text. A theme may override
//! either part. A theme that overrides a mail's text but gives no HTML for
//! it sends that mail as text alone, so that the two parts never say
//! different things.

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
        "mail/verify.html",
        include_str!("../templates/mail/verify.html"),
    ),
    (
        "mail/reset.txt",
        include_str!("../templates/mail/reset.txt"),
    ),
    (
        "mail/reset.html",
        include_str!("../templates/mail/reset.html"),
    ),
    (
        "mail/signup_again.txt",
        include_str!("../templates/mail/signup_again.txt"),
    ),
    (
        "mail/signup_again.html",
        include_str!("../templates/mail/signup_again.html"),
    ),
    (
        "mail/welcome.txt",
        include_str!("../templates/mail/welcome.txt"),
    ),
    (
        "mail/welcome.html",
        include_str!("../templates/mail/welcome.html"),
    ),
    (
        "mail/awaiting_approval.txt",
        include_str!("../templates/mail/awaiting_approval.txt"),
    ),
    (
        "mail/awaiting_approval.html",
        include_str!("../templates/mail/awaiting_approval.html"),
    ),
    (
        "mail/approved.txt",
        include_str!("../templates/mail/approved.txt"),
    ),
    (
        "mail/approved.html",
        include_str!("../templates/mail/approved.html"),
    ),
    (
        "mail/email_change.txt",
        include_str!("../templates/mail/email_change.txt"),
    ),
    (
        "mail/email_change.html",
        include_str!("../templates/mail/email_change.html"),
    ),
    (
        "mail/email_changed.txt",
        include_str!("../templates/mail/email_changed.txt"),
    ),
    (
        "mail/email_changed.html",
        include_str!("../templates/mail/email_changed.html"),
    ),
    (
        "mail/two_factor_off.txt",
        include_str!("../templates/mail/two_factor_off.txt"),
    ),
    (
        "mail/two_factor_off.html",
        include_str!("../templates/mail/two_factor_off.html"),
    ),
    (
        "mail/base.html",
        include_str!("../templates/mail/base.html"),
    ),
];

/// A mail's subject and text, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    /// The subject line.
    pub subject: String,
    /// The body, plain text.
    pub text: String,
    /// The body as HTML, when the mail has an HTML template.
    pub html: Option<String>,
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
        html: None,
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
            html: mail.html,
            // Every mail of the accounts answers something the person did
            // or tells them of a change to their account: none is bulk.
            unsubscribe: None,
        })
        .await
}

/// Renders mail template `name` (`mail/<name>.txt`) of the site's theme
/// (or the built-in one) with `ctx`, to which `site.name` and `base_url`
/// are added, and its HTML alternative `mail/<name>.html` if there is one
/// (see the module's documentation for which).
pub(crate) async fn compose(site: &Site, base_url: &str, name: &str, mut ctx: Value) -> MailText {
    let (site_name, theme_dir) = site_and_theme(site).await;
    if let Value::Object(map) = &mut ctx {
        map.insert("site".into(), json!({ "name": site_name }));
        map.insert("base_url".into(), json!(base_url));
    }
    let engine = |theme_dir: Option<std::path::PathBuf>| {
        Templates::new(
            TemplateSources {
                theme_dir,
                builtin: builtin(),
                source_dirs: Vec::new(),
            },
            false,
            vec![],
        )
    };
    let themed = theme_dir.clone().map(|d| engine(Some(d)));
    let plain = engine(None);
    let in_theme = |file: &str| theme_dir.as_ref().is_some_and(|d| d.join(file).is_file());
    let value = minijinja::Value::from_serialize(&ctx);
    let mut text_from_theme = false;
    let mut mail = None;
    if let Some(themed) = &themed {
        match themed.render(name, &value).map(|r| split(&r)) {
            Ok(Some(m)) => {
                text_from_theme = in_theme(name);
                mail = Some(m);
            }
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
    let mut mail = mail.unwrap_or_else(|| {
        plain
            .render(name, &value)
            .ok()
            .and_then(|r| split(&r))
            .expect("the built-in mail templates render")
    });
    let Some(html_name) = name.strip_suffix(".txt").map(|stem| format!("{stem}.html")) else {
        return mail;
    };
    if let Value::Object(map) = &mut ctx {
        map.insert("subject".into(), json!(mail.subject));
    }
    let value = minijinja::Value::from_serialize(&ctx);
    if let Some(themed) = themed.as_ref().filter(|_| in_theme(&html_name)) {
        match themed.render(&html_name, &value) {
            Ok(html) => {
                mail.html = Some(html);
                return mail;
            }
            Err(e) => {
                tracing::error!(template = %html_name, error = %e, "a theme's HTML mail template failed")
            }
        }
    }
    if text_from_theme {
        // The theme's own text, and no HTML of its own that works: the
        // built-in HTML would say something else.
        return mail;
    }
    if builtin().contains_key(&html_name) {
        match plain.render(&html_name, &value) {
            Ok(html) => mail.html = Some(html),
            Err(e) => {
                tracing::error!(template = %html_name, error = %e, "a built-in HTML mail template failed; text only")
            }
        }
    }
    mail
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
                text: "Body line\n".into(),
                html: None,
            })
        );
        assert_eq!(split("No subject\n\nBody"), None);
        assert_eq!(split("Subject:   \n\nBody"), None);
    }

    /// The `href`s of an HTML body, unescaped, in order of first use.
    fn links_in_html(html: &str) -> Vec<String> {
        let mut links: Vec<String> = Vec::new();
        for piece in html.split("href=\"").skip(1) {
            let link = piece
                .split('"')
                .next()
                .unwrap()
                .replace("&#x2f;", "/")
                .replace("&amp;", "&");
            if !links.contains(&link) {
                links.push(link);
            }
        }
        links
    }

    /// The URLs of a text body, in order of first use.
    fn links_in_text(text: &str) -> Vec<String> {
        let mut links: Vec<String> = Vec::new();
        for word in text.split_whitespace().filter(|w| w.starts_with("http")) {
            if !links.iter().any(|l| l == word) {
                links.push(word.to_string());
            }
        }
        links
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
        for (name, _) in MAIL_TEMPLATES.iter().filter(|(n, _)| n.ends_with(".txt")) {
            let mail = rt.block_on(compose(&site, "http://x", name, ctx()));
            assert!(!mail.subject.is_empty(), "{name}");
            assert!(!mail.text.contains("&lt;"), "{name}: not escaped");
            let html = mail.html.unwrap_or_else(|| panic!("{name} has HTML"));
            assert!(html.starts_with("<!DOCTYPE html>"), "{name}: {html}");
            assert!(html.contains("<html lang=\"en\">"), "{name}");
            assert!(
                html.contains("<title>") && !html.contains("<title></title>"),
                "{name}: the subject is its title"
            );
            assert!(
                html.contains("Ann&#x27;s &lt;Place&gt;"),
                "{name}: escaped: {html}"
            );
            assert!(!html.contains("<Place>"), "{name}");
            assert_eq!(
                links_in_html(&html),
                links_in_text(&mail.text),
                "{name}: the same links in both parts"
            );
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
        assert_eq!(
            welcome.html, None,
            "the theme's text, without HTML of its own"
        );
        std::fs::write(
            themed.join("welcome.html"),
            "<p>Hello {{ username }} of {{ site.name }}</p>",
        )
        .unwrap();
        let welcome = rt.block_on(compose(&site, "http://x", "mail/welcome.txt", ctx()));
        assert_eq!(
            welcome.html.as_deref(),
            Some("<p>Hello ann of Ann&#x27;s &lt;Place&gt;</p>")
        );
        // A theme's HTML alone goes with the built-in text.
        let reset_html = themed.join("reset.html");
        std::fs::write(&reset_html, "<p><a href=\"{{ link }}\">Reset</a></p>").unwrap();
        let reset = rt.block_on(compose(&site, "http://x", "mail/reset.txt", ctx()));
        assert_eq!(reset.subject, "Resetting your password");
        // Escaped as in a page (minijinja writes `/` as `&#x2f;`, which
        // a mail reader decodes like any HTML).
        assert_eq!(
            reset.html.as_deref(),
            Some("<p><a href=\"http:&#x2f;&#x2f;x&#x2f;l\">Reset</a></p>")
        );
        assert_eq!(
            links_in_html(reset.html.as_deref().unwrap()),
            ["http://x/l"]
        );
        std::fs::remove_file(reset_html).unwrap();
        std::fs::remove_file(themed.join("welcome.html")).unwrap();
        // A broken theme template: the built-in one goes out.
        std::fs::write(themed.join("welcome.txt"), "Subject: {% if %}").unwrap();
        let welcome = rt.block_on(compose(&site, "http://x", "mail/welcome.txt", ctx()));
        assert_eq!(welcome.subject, "Welcome to Ann's <Place>, ann");
    }
}
