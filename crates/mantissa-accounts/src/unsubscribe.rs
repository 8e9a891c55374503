//! `/unsubscribe/<token>`: where the unsubscribe links of bulk mail lead
//! ([`mantissa_mail::unsubscribe`] makes them and keeps who left which
//! list).
//!
//! Two ways in, one outcome:
//! - `POST`, RFC 8058's one-click: a mail provider POSTs
//!   `List-Unsubscribe=One-Click` to the link when the person presses its
//!   own "Unsubscribe" button. It comes from the provider's server, with no
//!   cookie and no CSRF token, so this path is let through the CSRF check
//!   ([`mantissa_web::App::allow_cross_site_posts`]): the signed token in
//!   the URL is the authority, and it can do nothing but take its own
//!   address off its own list. Answered with 200 and a short page.
//! - `GET`, a person following the link in their browser: a page saying
//!   what the button will do, and the button (a POST to the same URL). A
//!   GET changes nothing, since mail scanners and link prefetchers follow
//!   links (as for every mailed link: the accounts' pages module).
//!
//! A link that is not one of the site's gets a 404 that says so.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use mantissa_mail::unsubscribe::{self, Subscription};
use mantissa_web::{App, Page, PageResponses, WebError};
use serde_json::json;

fn message(title: &str, text: &str) -> Page {
    Page::new(
        "accounts/message.html",
        json!({ "title": title, "message": text, "link": null, "link_text": null }),
    )
}

fn internal(e: mantissa_mail::MailError) -> WebError {
    WebError::Internal(e.to_string())
}

/// What the link's token names; a 404 page when it names nothing.
async fn named(app: &App, token: &str) -> Result<Result<Subscription, Page>, WebError> {
    match unsubscribe::verify(app.site(), token)
        .await
        .map_err(internal)?
    {
        Some(s) => Ok(Ok(s)),
        None => {
            let why = "This unsubscribe link is not one of this site's, or it was cut short: \
                       copy the whole link from the message.";
            Ok(Err(
                message("Link not valid", why).refused(StatusCode::NOT_FOUND, why.to_string())
            ))
        }
    }
}

/// `GET /unsubscribe/{token}`: the page of a bulk mail's unsubscribe link
/// (nothing happens until its button).
#[utoipa::path(get, path = "/unsubscribe/{token}", operation_id = "unsubscribe_form", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
pub(crate) async fn unsubscribe_form(
    State(app): State<App>,
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    let s = match named(&app, &token).await? {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    if unsubscribe::is_unsubscribed(app.site(), &s.address, &s.list)
        .await
        .map_err(internal)?
    {
        return Ok(message(
            "Already unsubscribed",
            &format!(
                "{} gets no more mail of the list “{}” from this site.",
                s.address, s.list
            ),
        ));
    }
    Ok(Page::new(
        "accounts/confirm.html",
        json!({
            "title": "Unsubscribe",
            "message": format!(
                "Press the button to stop mail of the list “{}” from this site to {}. \
                 Mail about your account, such as password resets, still comes.",
                s.list, s.address
            ),
            "button": "Unsubscribe",
        }),
    ))
}

/// `POST /unsubscribe/{token}`: takes the link's address off its list
/// (RFC 8058 one-click, or the page's button). Needs no CSRF token.
#[utoipa::path(post, path = "/unsubscribe/{token}", operation_id = "unsubscribe", tag = "accounts",
    params(("token" = String, Path, description = "The link's token")), responses(PageResponses))]
pub(crate) async fn unsubscribe(
    State(app): State<App>,
    Path(token): Path<String>,
) -> Result<Page, WebError> {
    let s = match named(&app, &token).await? {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    unsubscribe::unsubscribe(app.site(), &s.address, &s.list)
        .await
        .map_err(internal)?;
    Ok(message(
        "Unsubscribed",
        &format!(
            "{} will get no more mail of the list “{}” from this site.",
            s.address, s.list
        ),
    ))
}
