//! A small offering for tests and demonstrations: notes kept in each user's
//! store, with a page at `/private/notes` to write them and to share them,
//! and each note rendered at `/users/<name>/<slug>` for whoever its shares
//! let see it.
//!
//! The page works without JavaScript: one form writes a note (title and
//! body), which is published at once at a slug made from its title
//! ([`mantissa_web::publish`]) — visible to nobody but its owner until it is
//! shared. Each note then shows its address, its shares, each with a "Stop
//! sharing" button ([`mantissa_accounts::unshare`]), and a form sharing it
//! ([`mantissa_accounts::share`]) with everyone, with every signed-in user
//! or with one named user, to view or to view and edit. Every form answers
//! with a redirect back to the list (post/redirect/get), whose top says
//! what happened (`?done=`, [`mantissa_web::done`]); a refused form is
//! shown again, 422, with what was typed and the message beside the
//! field. Its stylesheet is a
//! static file of the offering (`/static/notes/…/notes.css`): the site's CSP
//! allows no inline styles.
//!
//! `/api/private/notes` gives the list's data: `notes`, the titles in
//! order, and `entries`, each note with its id, body, address and shares,
//! fifty at a time (`?page=N`; `pager` says which and how many).
//! The `mantissa-notes-site` binary (`tests/notes-site`) is `mantissa`
//! plus this offering, which the browser tests drive.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mantissa_accounts::{
    AccountId, GroupMember, Role, Share, ShareError, account_names, find_account, share, unshare,
};
use mantissa_store::{Item, Ref, Write};
use mantissa_web::{
    App, Offering, Owner, Page, Pager, Published, SharedFuture, SharedRequest, WebError,
};
use serde::Deserialize;
use std::collections::HashMap;

/// A note.
#[derive(Item, Debug, Clone)]
#[item(name = "testkit.note", version = 1)]
pub struct Note {
    pub title: String,
    pub body: String,
}

/// The notes offering.
pub struct Notes;

const LIST: &str = r#"{% extends "base.html" %}
{% block title %}Notes · {{ site.name }}{% endblock %}
{% block main %}
<link rel="stylesheet" href="{{ static_url('notes', 'notes.css') }}">
<h1>Notes</h1>
<h2>Write a note</h2>
<form method="post" action="/private/notes/">
  {{ csrf_field() }}
  <p><label for="note-title">Title</label>
  <input id="note-title" name="title" required maxlength="200"{% if draft %} value="{{ draft.title }}"{% if draft.message %} aria-invalid="true" aria-describedby="note-title-error"{% endif %}{% endif %}></p>
  {% if draft and draft.message %}<p class="field-error" id="note-title-error" role="alert">{{ draft.message }}</p>{% endif %}
  <p><label for="note-body">Note</label>
  <textarea id="note-body" name="body" rows="5">{% if draft %}{{ draft.body }}{% endif %}</textarea></p>
  <p><button type="submit">Save and publish</button></p>
</form>
<h2>Your notes</h2>
{% if people %}<datalist id="share-people">{% for p in people %}<option value="{{ p }}">{% endfor %}</datalist>{% endif %}
{% if not entries %}<p>No notes yet.</p>{% endif %}
{% for n in entries %}
<article class="note" id="note-{{ n.id }}">
  <h3>{{ n.title }}</h3>
  {% if n.url %}<p>Address: <a class="note-url" href="{{ n.url }}">{{ n.url }}</a>
  {% if not n.shares %}(only you can see it until you share it){% endif %}</p>{% endif %}
  {% if n.shares %}
  <ul class="shares">
  {% for s in n.shares %}
    <li>Shared with {{ s.label }} ({{ s.capabilities }})
      <form method="post" action="/private/notes/{{ n.id }}/unshare">{{ csrf_field() }}<input type="hidden" name="role" value="{{ s.role }}"><button type="submit">Stop sharing with {{ s.label }}</button></form></li>
  {% endfor %}
  </ul>
  {% endif %}
  {% if n.url %}
  <form class="share" method="post" action="/private/notes/{{ n.id }}/share">
    {{ csrf_field() }}
    <fieldset><legend>Share “{{ n.title }}”</legend>
    <label class="check"><input type="radio" name="role" value="everyone"> with everyone</label>
    <label class="check"><input type="radio" name="role" value="signed-in"> with signed-in users</label>
    <label class="check"><input type="radio" name="role" value="user" checked> with one user:</label>
    <p><label for="share-user-{{ n.id }}">User name</label>
    <input id="share-user-{{ n.id }}" name="user" autocomplete="off" list="share-people"{% if problem and problem.note == n.id %} value="{{ problem.user }}" aria-invalid="true" aria-describedby="share-problem-{{ n.id }}"{% endif %}></p>
    {% if problem and problem.note == n.id %}<p class="error" id="share-problem-{{ n.id }}" role="alert">{{ problem.message }}</p>{% endif %}
    <label class="check"><input type="checkbox" name="edit" value="on"> and let them edit it</label>
    <p><button type="submit">Share</button></p>
    </fieldset>
  </form>
  {% else %}<p>Not published, so not shared.</p>{% endif %}
</article>
{% endfor %}
{% if pager.pages > 1 %}
<nav class="pager" aria-label="Pages of notes">
  {% if pager.previous %}<a rel="prev" href="/private/notes/?page={{ pager.previous }}">Previous</a>{% endif %}
  <span>Page {{ pager.page }} of {{ pager.pages }} ({{ pager.total }} notes)</span>
  {% if pager.next %}<a rel="next" href="/private/notes/?page={{ pager.next }}">Next</a>{% endif %}
</nav>
{% endif %}
{% endblock %}"#;

const NOTE: &str = r#"{% extends "base.html" %}
{% block title %}{{ title }} · {{ site.name }}{% endblock %}
{% block main %}<h1>{{ title }}</h1><link rel="stylesheet" href="{{ static_url('notes', 'notes.css') }}"><p class="note-body">{{ body }}</p><p>by {{ owner }}</p>{% if can_edit %}<p>You may edit this note.</p>{% endif %}{% endblock %}"#;

/// The offering's stylesheet (the site's CSP allows no inline styles).
const NOTES_CSS: &[u8] = b".note-body { white-space: pre-wrap; }\n\
.note { border-top: 1px solid #ccc; margin-top: 1.5rem; }\n\
.note form { margin: 0; }\n";

/// The form that writes a note (a missing field is an empty one, which
/// the form then asks for, beside it).
#[derive(Deserialize)]
struct NewNote {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

/// The form that shares a note: `role` is `everyone`, `signed-in` or `user`
/// (then `user` names them); `edit` adds the edit capability.
#[derive(Deserialize)]
struct ShareForm {
    role: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    edit: Option<String>,
}

/// The form that stops a share: `role` as kept in the share
/// (`everyone`, `signed-in`, `user:NAME`, `group:NAME`).
#[derive(Deserialize)]
struct UnshareForm {
    role: String,
}

/// Back to the list, which says what was `done` (one of [`MESSAGES`]).
fn back(done: &str) -> Redirect {
    mantissa_web::done("/private/notes/", done)
}

/// What the list says after each form ([`Offering::messages`]).
const MESSAGES: &[(&str, &str)] = &[
    (
        "notes-saved",
        "Note saved and published at its address; only you can see it until you share it.",
    ),
    ("notes-shared", "The note was shared."),
    ("notes-unshared", "The note is no longer shared with them."),
];

/// A new note that was refused: shown again in the form, with why.
struct Draft {
    title: String,
    body: String,
    message: String,
}

/// Says who a share is for, in words; `names` are the user names of the
/// accounts shared with.
fn role_label(key: &str, names: &HashMap<AccountId, String>) -> String {
    match Role::from_key(key) {
        Some(Role::Everyone) => "everyone".into(),
        Some(Role::SignedIn) => "signed-in users".into(),
        Some(Role::User(a)) => names
            .get(&a)
            .cloned()
            .unwrap_or_else(|| "a deleted account".into()),
        Some(Role::Group(g)) => format!("the group {g}"),
        Some(Role::FormerUser(u)) => {
            format!("{u} (by name, from before shares named accounts: grants nothing)")
        }
        None => key.into(),
    }
}

/// A share form that was refused, to show on the list next to that form.
struct Problem {
    note: i64,
    user: String,
    message: String,
}

/// Notes on one page of the list (and of its JSON): a list of ten
/// thousand notes is not built into one answer.
const NOTES_PER_PAGE: usize = 50;

/// The list's query: which page, from 1 (anything else is the first).
#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    page: String,
}

async fn list(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Query(q): Query<ListQuery>,
) -> Result<Page, WebError> {
    let page = Pager::page_from(&q.page);
    list_page(app, owner, None, None, page).await
}

/// Page `page` of the list, with the refused share form's message if there
/// is one (then answered 422, on the page that holds the form's note, the
/// form keeping what was typed).
async fn list_page(
    app: App,
    owner: Owner,
    problem: Option<Problem>,
    draft: Option<Draft>,
    page: usize,
) -> Result<Page, WebError> {
    let about = problem.as_ref().map(|p| p.note);
    let (notes, total, page, published, shares, members) = owner
        .store
        .read(move |r| {
            let by_title = || r.query::<Note>().order_by(Note::title.asc());
            let total = by_title().count()? as usize;
            let page = match about {
                Some(note) => by_title()
                    .ids()?
                    .iter()
                    .position(|id| id.id() == note)
                    .map_or(1, |i| i / NOTES_PER_PAGE + 1),
                None => page,
            };
            let notes = by_title()
                .limit(NOTES_PER_PAGE as u64)
                .offset(Pager::skip(page, NOTES_PER_PAGE) as u64)
                .all()?;
            let ids: Vec<i64> = notes.iter().map(|n| n.id().id()).collect();
            let published = r
                .query::<Published>()
                .filter(Published::item_type.eq(Note::NAME))
                .filter(Published::item_id.is_in(ids.clone()))
                .filter(Published::moved_to.is_null())
                .all()?;
            let shares = r
                .query::<Share>()
                .filter(Share::item_type.eq(Note::NAME))
                .filter(Share::item_id.is_in(ids))
                .all()?;
            let members = r.query::<GroupMember>().column(GroupMember::account)?;
            Ok((notes, total, page, published, shares, members))
        })
        .await?;
    // The accounts this owner already shares with (or has in a group): the
    // share form suggests them. Not every account of the site: that list
    // would tell every user who else has an account.
    let mut ids: Vec<AccountId> = shares
        .iter()
        .filter_map(|s| match Role::from_key(&s.role) {
            Some(Role::User(a)) => Some(a),
            _ => None,
        })
        .chain(members.into_iter().map(AccountId))
        .collect();
    ids.sort();
    ids.dedup();
    let site = app.site().clone();
    let names = tokio::task::spawn_blocking(move || account_names(&site, &ids))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let mut people: Vec<&String> = names.values().collect();
    people.sort();
    let entries: Vec<_> = notes
        .iter()
        .map(|n| {
            let id = n.id().id();
            let url = published
                .iter()
                .find(|p| p.item_id == id)
                .map(|p| format!("/users/{}/{}", owner.name, p.slug));
            let shares: Vec<_> = shares
                .iter()
                .filter(|s| s.item_id == id)
                .map(|s| {
                    serde_json::json!({
                        "role": s.role,
                        "label": role_label(&s.role, &names),
                        "capabilities": s.capabilities.replace(',', ", "),
                    })
                })
                .collect();
            serde_json::json!({
                "id": id,
                "title": n.title,
                "body": n.body,
                "url": url,
                "shares": shares,
            })
        })
        .collect();
    let titles: Vec<&str> = notes.iter().map(|n| n.title.as_str()).collect();
    let failed = problem.is_some() || draft.is_some();
    let draft = draft
        .map(|d| serde_json::json!({ "title": d.title, "body": d.body, "message": d.message }));
    let problem = problem
        .map(|p| serde_json::json!({ "note": p.note, "user": p.user, "message": p.message }));
    let mut answer = Page::new(
        "notes/list.html",
        serde_json::json!({
            "user": owner.name,
            "notes": titles,
            "entries": entries,
            "people": people,
            "problem": problem,
            "draft": draft,
            "pager": Pager::new(page, total, NOTES_PER_PAGE),
        }),
    );
    if failed {
        answer.status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(answer)
}

async fn create(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Form(form): Form<NewNote>,
) -> Result<Response, WebError> {
    let title = form.title.trim().to_string();
    if title.is_empty() {
        let draft = Draft {
            title: form.title,
            body: form.body,
            message: "A note needs a title.".into(),
        };
        return Ok(list_page(app, owner, None, Some(draft), 1)
            .await?
            .into_response());
    }
    owner
        .store
        .write(move |tx| {
            let note = tx.insert(&Note {
                title: title.clone(),
                body: form.body,
            })?;
            // Another note may have the title's address: this one then
            // gets its id after the title (cut to make room for it), and
            // if a title took even that, a count after the id.
            let taken = |tx: &Write<'_>, slug: &str| {
                tx.query::<Published>()
                    .filter(Published::slug.eq(slug.to_string()))
                    .first()
                    .map(|p| p.is_some())
            };
            let mut slug = mantissa_web::slugify(&title);
            let mut n = 1;
            while taken(tx, &slug)? {
                let suffix = match n {
                    1 => note.id().to_string(),
                    n => format!("{}-{n}", note.id()),
                };
                slug = mantissa_web::slugify_with_suffix(&title, &suffix);
                n += 1;
            }
            mantissa_web::publish(tx, "notes", note, &slug).map(drop)
        })
        .await?;
    Ok(back("notes-saved").into_response())
}

async fn share_note(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
    Form(form): Form<ShareForm>,
) -> Result<Response, WebError> {
    let role = match form.role.as_str() {
        "everyone" => Role::Everyone,
        "signed-in" => Role::SignedIn,
        "user" => {
            let typed = form.user.trim().to_string();
            let site = app.site().clone();
            let name = typed.clone();
            let found = tokio::task::spawn_blocking(move || find_account(&site, &name))
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?;
            match found {
                Ok(account) => Role::User(account),
                // Refused on the form itself, which keeps what was typed:
                // nothing is granted to a name nobody holds (someone could
                // sign up with it later).
                Err(ShareError::NoSuchUser { .. }) => {
                    let message = if typed.is_empty() {
                        "Type the user name of the person to share with.".to_string()
                    } else {
                        format!(
                            "There is no user called “{typed}”. Check the spelling: \
                             a note can only be shared with someone who has an account."
                        )
                    };
                    let problem = Problem {
                        note: id,
                        user: typed,
                        message,
                    };
                    return Ok(list_page(app, owner, Some(problem), None, 1)
                        .await?
                        .into_response());
                }
                Err(ShareError::Store(e)) => return Err(e.into()),
            }
        }
        other => {
            return Err(WebError::BadRequest(format!(
                "{other:?} is not someone a note can be shared with."
            )));
        }
    };
    let capabilities: &[&str] = if form.edit.is_some() {
        &["view", "edit"]
    } else {
        &["view"]
    };
    on_own_note(owner, id, "notes-shared", move |tx, note| {
        share(tx, note, role, capabilities)
    })
    .await
    .map(IntoResponse::into_response)
}

/// Does `change` to the owner's note `id`, then goes back to the list; a
/// 404 if they have no such note.
async fn on_own_note(
    owner: Owner,
    id: i64,
    done: &'static str,
    change: impl FnOnce(&mut Write<'_>, Ref<Note>) -> mantissa_store::Result<()> + Send + 'static,
) -> Result<Redirect, WebError> {
    let found = owner
        .store
        .write(move |tx| {
            let note = Ref::<Note>::from_id(id);
            if tx.find(note)?.is_none() {
                return Ok(false);
            }
            change(tx, note)?;
            Ok(true)
        })
        .await?;
    if !found {
        return Err(WebError::NotFound);
    }
    Ok(back(done))
}

async fn unshare_note(
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
    Form(form): Form<UnshareForm>,
) -> Result<Redirect, WebError> {
    let role = Role::from_key(&form.role)
        .ok_or_else(|| WebError::BadRequest(format!("{:?} is not a share.", form.role)))?;
    on_own_note(owner, id, "notes-unshared", move |tx, note| {
        unshare(tx, note, role)
    })
    .await
}

impl Offering for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }

    fn label(&self) -> Option<&'static str> {
        Some("Notes")
    }

    fn messages(&self) -> Vec<(&'static str, &'static str)> {
        MESSAGES.to_vec()
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        vec![("notes/list.html", LIST), ("notes/note.html", NOTE)]
    }

    fn static_files(&self) -> Vec<(&'static str, &'static [u8])> {
        vec![("notes.css", NOTES_CSS)]
    }

    fn install(&self, tx: &mut mantissa_store::Write<'_>) -> mantissa_store::Result<()> {
        tx.insert(&Note {
            title: "Welcome".into(),
            body: "Your first note.".into(),
        })
        .map(drop)
    }

    fn private_routes(&self) -> Router<App> {
        Router::new()
            .route("/", get(list).post(create))
            .route("/{id}/share", post(share_note))
            .route("/{id}/unshare", post(unshare_note))
    }

    fn shared(&self, _app: App, req: SharedRequest) -> SharedFuture {
        Box::pin(async move {
            if !req.rest.is_empty() {
                return Err(WebError::NotFound);
            }
            if req.method == axum::http::Method::POST {
                return Err(WebError::MethodNotAllowed);
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
