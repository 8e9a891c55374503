//! A guestbook, the application GUIDE.md builds step by step.
//!
//! Every user gets a book when their account is made, published at
//! `/users/<name>/my-guestbook` for everyone to read and sign. Its owner
//! reads and writes in it at `/private/guestbook/`, and renames it there
//! (the old address then redirects to the new one). Visitors sign it on its
//! public page: a signed-in visitor signs with their user name, anyone
//! else with the name they type.

use mantissa::accounts::{Role, share};
use mantissa::store::{Item, Ref, Timestamp, upgrader};
use mantissa::web::{
    App, Extension, InstallError, IntoResponse, JsonOrForm, Offering, Owner, Page, Response,
    Router, SharedFuture, SharedRequest, StatusCode, WebError, done, get, json, post, publish,
};
use serde::Deserialize;

/// One entry in a book.
#[derive(Item, Debug, Clone)]
#[item(name = "guestbook.entry", version = 2)]
pub struct Entry {
    /// Who wrote it: a user name when `signed_in`, else the name they typed.
    pub author: String,
    /// What they wrote.
    pub text: String,
    /// When.
    #[item(index)]
    pub written: Timestamp,
    /// Whether the author was signed in (version 2).
    pub signed_in: bool,
}

// Version 1 had no `signed_in`: its entries were all typed names.
upgrader!(Entry, 1, |entry| {
    entry.set("signed_in", false);
    Ok(())
});

/// The book: one per user, installed with the account.
#[derive(Item, Debug, Clone)]
#[item(name = "guestbook.book", version = 1)]
pub struct Book {
    /// Its title, which its address is made from.
    pub title: String,
}

/// The longest entry, in characters.
pub const TEXT_MAX: usize = 2000;
/// The longest name, in characters.
pub const NAME_MAX: usize = 80;
/// How many entries a page shows, newest first.
pub const SHOWN: u64 = 100;
/// The most entries a book takes in an hour from visitors who are not
/// signed in. Counted in the book's store, in the transaction that adds
/// the entry: a spammer with thousands of addresses (each under the
/// site's per-address limits) fills one hour's quota of one book, not the
/// book; signed-in visitors, who answer for what they write, still sign.
pub const VISITOR_ENTRIES_PER_HOUR: u64 = 20;

/// The guestbook offering.
pub struct Guestbook;

impl Offering for Guestbook {
    fn name(&self) -> &'static str {
        "guestbook"
    }

    // The navigation links to /private/guestbook with this.
    fn label(&self) -> Option<&'static str> {
        Some("Guestbook")
    }

    // What the layout says after a form, by the key its redirect names
    // (`?done=guestbook-written`): a fixed list, so that a link cannot make
    // a page say anything else.
    fn messages(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("guestbook-written", "Your entry is in the book."),
            (
                "guestbook-renamed",
                "The book is renamed; its old address leads to the new one.",
            ),
            ("guestbook-signed", "Thank you for signing the book."),
        ]
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "guestbook/mine.html",
                include_str!("../templates/guestbook/mine.html"),
            ),
            (
                "guestbook/book.html",
                include_str!("../templates/guestbook/book.html"),
            ),
        ]
    }

    // `serve --dev` reads the templates from here on every render.
    fn template_dir(&self) -> Option<std::path::PathBuf> {
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/templates").into())
    }

    // A new account gets a book, published for everyone to read and sign.
    fn install(&self, tx: &mut mantissa::Write<'_>) -> Result<(), InstallError> {
        let book = tx.insert(&Book {
            title: "My guestbook".into(),
        })?;
        publish(tx, "guestbook", book, "My guestbook")?;
        share(tx, book, Role::Everyone, &["view", "sign"])?;
        Ok(())
    }

    fn private_routes(&self) -> Router<App> {
        Router::new()
            .route("/", get(mine).post(write))
            .route("/title", post(rename))
    }

    fn shared(&self, _app: App, req: SharedRequest) -> SharedFuture {
        Box::pin(async move {
            if !req.rest.is_empty() {
                return Err(WebError::NotFound);
            }
            match req.method {
                mantissa::web::axum::http::Method::POST => sign(req).await,
                _ => book_page(&req, EntryForm::default(), None).await,
            }
        })
    }
}

/// A form's fields, as typed: shown again with a message when refused.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct EntryForm {
    /// The name to sign with (visitors who are not signed in).
    #[serde(default)]
    pub name: String,
    /// The entry.
    #[serde(default)]
    pub text: String,
}

/// What went wrong with a form, beside the field it is about.
#[derive(Debug, serde::Serialize)]
struct Refusal {
    field: &'static str,
    message: String,
    /// Refused for now, not for what was typed (429, not 422).
    #[serde(skip)]
    later: bool,
}

/// `page`, refused with 422 and the refusal's words (the `detail` of the
/// problem under `/api/`) when there is one.
fn refused_if(page: Page, refusal: Option<Refusal>) -> Page {
    match refusal {
        Some(r) if r.later => page.refused(StatusCode::TOO_MANY_REQUESTS, r.message),
        Some(r) => page.refused(StatusCode::UNPROCESSABLE_ENTITY, r.message),
        None => page,
    }
}

/// The entry a form asks for, or why not. `author` is the signed-in
/// user's name, if any; otherwise the name typed.
fn checked(form: &EntryForm, author: Option<&str>) -> Result<(String, String), Refusal> {
    let text = form.text.trim();
    if text.is_empty() {
        return Err(Refusal {
            field: "text",
            message: "Write something to sign the book with.".into(),
            later: false,
        });
    }
    if text.chars().count() > TEXT_MAX {
        return Err(Refusal {
            field: "text",
            message: format!("An entry is at most {TEXT_MAX} characters."),
            later: false,
        });
    }
    let name = match author {
        Some(user) => user.to_string(),
        None => {
            let name = form.name.trim();
            if name.is_empty() {
                return Err(Refusal {
                    field: "name",
                    message: "Say who you are: a name is needed.".into(),
                    later: false,
                });
            }
            if name.chars().count() > NAME_MAX {
                return Err(Refusal {
                    field: "name",
                    message: format!("A name is at most {NAME_MAX} characters."),
                    later: false,
                });
            }
            name.to_string()
        }
    };
    Ok((name, text.to_string()))
}

/// The book's title and its newest entries.
async fn book_and_entries(
    store: &mantissa::Store,
) -> Result<(Book, Vec<mantissa::web::serde_json::Value>), WebError> {
    let (book, entries) = store
        .read(|r| -> mantissa::store::Result<_> {
            let book = r.query::<Book>().first()?;
            let entries = r
                .query::<Entry>()
                .order_by(Entry::written.desc())
                .limit(SHOWN)
                .all()?;
            Ok((book, entries))
        })
        .await?;
    let book = book.ok_or(WebError::NotFound)?;
    let entries = entries
        .iter()
        .map(|e| {
            json!({
                "author": e.author,
                "text": e.text,
                "written": e.written.to_string(),
                "signed_in": e.signed_in,
            })
        })
        .collect();
    Ok(((*book).clone(), entries))
}

/// `/private/guestbook/`: the owner's book.
async fn mine(Extension(owner): Extension<Owner>) -> Result<Page, WebError> {
    owner_page(&owner, EntryForm::default(), None).await
}

async fn owner_page(
    owner: &Owner,
    form: EntryForm,
    refusal: Option<Refusal>,
) -> Result<Page, WebError> {
    let (book, entries) = book_and_entries(&owner.store).await?;
    let address = owner
        .store
        .read(|r| {
            r.query::<mantissa::web::Published>()
                .filter(mantissa::web::Published::offering.eq("guestbook"))
                .filter(mantissa::web::Published::moved_to.is_null())
                .first()
        })
        .await?
        .map(|p| format!("/users/{}/{}", owner.name, p.slug));
    let page = Page::new(
        "guestbook/mine.html",
        json!({
            "title": book.title,
            "address": address,
            "entries": entries,
            "form": form,
            "refusal": refusal,
        }),
    );
    Ok(refused_if(page, refusal))
}

/// The owner writes in their own book.
async fn write(
    Extension(owner): Extension<Owner>,
    JsonOrForm(form): JsonOrForm<EntryForm>,
) -> Result<Response, WebError> {
    match checked(&form, Some(&owner.name)) {
        Err(refusal) => Ok(owner_page(&owner, form, Some(refusal))
            .await?
            .into_response()),
        Ok((author, text)) => {
            owner
                .store
                .write(move |tx| {
                    tx.insert(&Entry {
                        author,
                        text,
                        written: Timestamp::now(),
                        signed_in: true,
                    })
                    .map(drop)
                })
                .await?;
            Ok(done("/private/guestbook/", "guestbook-written").into_response())
        }
    }
}

#[derive(Deserialize)]
struct TitleForm {
    #[serde(default)]
    title: String,
}

/// The owner renames the book: a new address, the old one redirecting.
async fn rename(
    Extension(owner): Extension<Owner>,
    JsonOrForm(form): JsonOrForm<TitleForm>,
) -> Result<Response, WebError> {
    let title = form.title.trim().to_string();
    if title.is_empty() || title.chars().count() > NAME_MAX {
        let refusal = Refusal {
            field: "title",
            message: format!("A title has 1 to {NAME_MAX} characters."),
            later: false,
        };
        return Ok(owner_page(&owner, EntryForm::default(), Some(refusal))
            .await?
            .into_response());
    }
    owner
        .store
        .write(move |tx| {
            let Some(mut book) = tx.query::<Book>().first()? else {
                return Ok(());
            };
            book.title = title.clone();
            tx.update(&book)?;
            let id: Ref<Book> = book.id();
            publish(tx, "guestbook", id, &title).map(drop)
        })
        .await?;
    Ok(done("/private/guestbook/", "guestbook-renamed").into_response())
}

/// The book's public page, with the sign form for those who may sign.
async fn book_page(
    req: &SharedRequest,
    form: EntryForm,
    refusal: Option<Refusal>,
) -> Result<Response, WebError> {
    let (book, entries) = book_and_entries(&req.store).await?;
    let may_sign = mantissa::web::grants(&req.capabilities, "sign");
    let page = Page::new(
        "guestbook/book.html",
        json!({
            "title": book.title,
            "owner": req.owner,
            "entries": entries,
            "may_sign": may_sign,
            "visitor": req.visitor,
            "form": form,
            "refusal": refusal,
        }),
    );
    Ok(refused_if(page, refusal).hiding_addresses().into_response())
}

/// A visitor signs the book.
async fn sign(req: SharedRequest) -> Result<Response, WebError> {
    if !mantissa::web::grants(&req.capabilities, "sign") {
        return Err(WebError::MethodNotAllowed);
    }
    let form: EntryForm = req.form()?;
    match checked(&form, req.visitor.as_deref()) {
        Err(refusal) => book_page(&req, form, Some(refusal)).await,
        Ok((author, text)) => {
            let signed_in = req.visitor.is_some();
            let taken = req
                .store
                .write(move |tx| -> mantissa::store::Result<_> {
                    let now = Timestamp::now();
                    if !signed_in {
                        let hour_ago = Timestamp::from_micros(now.as_micros() - 3_600_000_000);
                        let lately = tx
                            .query::<Entry>()
                            .filter(Entry::signed_in.eq(false))
                            .filter(Entry::written.gt(hour_ago))
                            .count()?;
                        if lately >= VISITOR_ENTRIES_PER_HOUR {
                            return Ok(false);
                        }
                    }
                    tx.insert(&Entry {
                        author,
                        text,
                        written: now,
                        signed_in,
                    })?;
                    Ok(true)
                })
                .await?;
            if !taken {
                let refusal = Refusal {
                    field: "text",
                    message: format!(
                        "This book has taken {VISITOR_ENTRIES_PER_HOUR} entries from visitors who are not signed in in the last hour, the most it takes. Sign in to sign it now, or try again later."
                    ),
                    later: true,
                };
                return book_page(&req, form, Some(refusal)).await;
            }
            Ok(done(&req.path, "guestbook-signed").into_response())
        }
    }
}
