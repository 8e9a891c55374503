//! A small offering for tests: notes kept in each user's store, listed at
//! `/private/notes`, and rendered at `/users/<name>/<slug>` when published.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use mantissa_store::{Item, Ref};
use mantissa_web::{App, Offering, Owner, Page, SharedFuture, SharedRequest, WebError};

/// A note.
#[derive(Item, Debug, Clone)]
#[item(name = "testkit.note", version = 1)]
pub struct Note {
    pub title: String,
    pub body: String,
}

/// The notes offering.
pub struct Notes;

impl Offering for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "notes/list.html",
                "{% extends \"base.html\" %}{% block main %}<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endblock %}",
            ),
            (
                "notes/note.html",
                "{% extends \"base.html\" %}{% block main %}<h1>{{ title }}</h1><p>{{ body }}</p><p>by {{ owner }}</p>{% if can_edit %}<p>You may edit this note.</p>{% endif %}{% endblock %}",
            ),
        ]
    }

    fn install(&self, tx: &mut mantissa_store::Write<'_>) -> mantissa_store::Result<()> {
        tx.insert(&Note {
            title: "Welcome".into(),
            body: "Your first note.".into(),
        })
        .map(drop)
    }

    fn private_routes(&self) -> Router<App> {
        async fn list(Extension(owner): Extension<Owner>) -> Result<Page, WebError> {
            let notes = owner
                .store
                .read(|r| {
                    r.query::<Note>()
                        .order_by(Note::title.asc())
                        .column(Note::title)
                })
                .await?;
            Ok(Page::new(
                "notes/list.html",
                serde_json::json!({ "notes": notes }),
            ))
        }
        Router::new().route("/", get(list))
    }

    fn shared(&self, _app: App, req: SharedRequest) -> SharedFuture {
        Box::pin(async move {
            if !req.rest.is_empty() {
                return Err(WebError::NotFound);
            }
            let id = Ref::<Note>::from_id(req.item_id);
            let note = req
                .store
                .read(move |r| r.find(id))
                .await?
                .ok_or(WebError::NotFound)?;
            Ok(Page::new(
                "notes/note.html",
                serde_json::json!({
                    "title": note.title,
                    "body": note.body,
                    "owner": req.owner,
                    "can_edit": mantissa_web::grants(&req.capabilities, "edit"),
                }),
            )
            .into_response())
        })
    }
}
