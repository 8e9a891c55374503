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
//! fifty at a time (`?page=N`; `pager` says which and how many). Under
//! `/api/` each form's POST also takes a JSON body, and answers with the
//! note it made (201, `Location` its published address) or changed (200)
//! instead of a redirect; the routes are in the site's OpenAPI document
//! (`/api/openapi.json`), described next to their handlers.
//! The `mantissa-notes-site` binary (`tests/notes-site`) is `mantissa`
//! plus this offering, which the browser tests drive.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mantissa_accounts::{
    AccountId, GroupMember, Role, Share, ShareError, account_names, find_account, share, unshare,
};
use mantissa_store::{Item, Ref, StoreError, Write};
use mantissa_web::{
    App, InstallError, JsonOrForm, Offering, Owner, Page, Pager, Problem, Published, SharedFuture,
    SharedRequest, WebError, Written,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The longest title, in characters.
const TITLE_MAX: usize = 200;

/// The form that writes a note (a missing field is an empty one, which
/// the form then asks for, beside it).
#[derive(Deserialize, ToSchema)]
struct NewNote {
    /// The title: up to 200 characters, not only spaces. (Read as empty
    /// when missing, so that the form can say it is needed; the API says
    /// it is required.)
    #[schema(required = true, min_length = 1, max_length = 200, pattern = r"\S")]
    #[serde(default)]
    title: String,
    /// The text.
    #[serde(default)]
    body: String,
}

/// Who a note is shared with.
#[derive(Deserialize, Clone, Copy)]
enum ShareWith {
    /// Everyone, signed in or not.
    #[serde(rename = "everyone")]
    Everyone,
    /// Every signed-in user.
    #[serde(rename = "signed-in")]
    SignedIn,
    /// The one user named by `user`.
    #[serde(rename = "user")]
    User,
}

/// The form that shares a note: `role` is `everyone`, `signed-in` or `user`
/// (then `user` names them); `edit` adds the edit capability.
#[derive(Deserialize)]
struct ShareForm {
    /// Who to share with.
    role: ShareWith,
    /// The user name, when `role` is `user`.
    #[serde(default)]
    user: String,
    /// Present (the form's checkbox sends `on`) or `true`: they may edit
    /// it too; absent, `false`, `off` or empty: view only.
    #[serde(default, deserialize_with = "mantissa_web::checkbox")]
    edit: bool,
}

/// The schema of [`ShareForm`]: `user` is needed (and only read) when
/// `role` is `user`, which a schema says with one object for each.
impl utoipa::PartialSchema for ShareForm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let roles = |roles: &[&str]| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(roles.iter().copied()))
        };
        let edit = || Option::<mantissa_web::Checkbox>::schema();
        OneOfBuilder::new()
            .description(Some("Who to share the note with"))
            .item(
                ObjectBuilder::new()
                    .description(Some("With everyone, or with every signed-in user"))
                    .property("role", roles(&["everyone", "signed-in"]))
                    .required("role")
                    .property("edit", edit()),
            )
            .item(
                ObjectBuilder::new()
                    .description(Some("With the one user named by `user`"))
                    .property("role", roles(&["user"]))
                    .required("role")
                    .property(
                        "user",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .description(Some("Their user name"))
                            .pattern(Some(r"\S")),
                    )
                    .required("user")
                    .property("edit", edit()),
            )
            .into()
    }
}

impl ToSchema for ShareForm {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "Checkbox".into(),
            <mantissa_web::Checkbox as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// The form that stops a share: `role` as kept in the share
/// (`everyone`, `signed-in`, `user:NAME`, `group:NAME`).
#[derive(Deserialize, ToSchema)]
struct UnshareForm {
    /// The share's `role`, as the list gives it.
    #[schema(pattern = r"^(everyone|signed-in|account:[0-9]{1,18}|group:\S.*|former-user:\S.*)$")]
    role: String,
}

const BACK: &str = "/private/notes/";

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
#[derive(Serialize, ToSchema)]
struct Draft {
    /// The title typed.
    title: String,
    /// The text typed.
    body: String,
    /// What was wrong.
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
struct ShareRefused {
    note: i64,
    user: String,
    message: String,
}

/// Notes on one page of the list (and of its JSON): a list of ten
/// thousand notes is not built into one answer.
const NOTES_PER_PAGE: usize = 50;

/// The list's query: which page, from 1 (anything else is the first).
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The page, from 1; anything else is the first.
    #[serde(default)]
    page: String,
}

/// A share of a note, as the list shows it.
#[derive(Serialize, ToSchema)]
struct ShareEntry {
    /// Who, as kept (`everyone`, `signed-in`, `user:ID`, `group:NAME`):
    /// what stopping the share names.
    role: String,
    /// Who, in words.
    label: String,
    /// What they may do: `view`, or `view, edit`.
    capabilities: String,
}

/// A note, as the list shows it.
#[derive(Serialize, ToSchema)]
struct NoteEntry {
    /// Its id.
    id: i64,
    /// Its title.
    title: String,
    /// Its text.
    body: String,
    /// Where it is published (`/users/<owner>/<slug>`).
    url: Option<String>,
    /// Who it is shared with.
    shares: Vec<ShareEntry>,
}

/// A share form that was refused, with what was typed.
#[derive(Serialize, ToSchema)]
struct FormProblem {
    /// The note whose form it was.
    note: i64,
    /// The user name typed.
    user: String,
    /// What was wrong.
    message: String,
}

/// The list of notes.
#[derive(Serialize, ToSchema)]
struct NoteList {
    /// The owner.
    user: String,
    /// This page's titles, in order.
    notes: Vec<String>,
    /// This page's notes.
    entries: Vec<NoteEntry>,
    /// The people the owner shares with (the share form suggests them).
    people: Vec<String>,
    /// A refused share form.
    problem: Option<FormProblem>,
    /// A refused new note, with what was typed.
    draft: Option<Draft>,
    /// Which page this is, of how many.
    pager: Pager,
}

/// A page of the signed-in user's notes, by title.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "list_notes",
    tag = "notes",
    params(ListQuery),
    security(("token" = [])),
    responses(
        (status = 200, description = "A page of notes", body = NoteList),
        (status = "default", description = "A problem", body = Problem,
            content_type = "application/problem+json"),
    )
)]
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
    problem: Option<ShareRefused>,
    draft: Option<Draft>,
    page: usize,
) -> Result<Page, WebError> {
    let about = problem.as_ref().map(|p| p.note);
    let (notes, total, page, published, shares, members) = owner
        .store
        .read(move |r| -> mantissa_store::Result<_> {
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
    let entries: Vec<NoteEntry> = notes
        .iter()
        .map(|n| entry(&owner.name, n, &published, &shares, &names))
        .collect();
    let titles: Vec<String> = notes.iter().map(|n| n.title.clone()).collect();
    let failed = problem
        .as_ref()
        .map(|p| p.message.clone())
        .or_else(|| draft.as_ref().map(|d| d.message.clone()));
    let problem = problem.map(|p| FormProblem {
        note: p.note,
        user: p.user,
        message: p.message,
    });
    let answer = Page::new(
        "notes/list.html",
        NoteList {
            user: owner.name,
            notes: titles,
            entries,
            people: people.into_iter().cloned().collect(),
            problem,
            draft,
            pager: Pager::new(page, total, NOTES_PER_PAGE),
        },
    );
    Ok(match failed {
        Some(detail) => answer.refused(StatusCode::UNPROCESSABLE_ENTITY, detail),
        None => answer,
    })
}

/// Note `n` as the list shows it, given the published addresses and
/// shares of the notes around it, and the names of the accounts shared
/// with.
fn entry(
    owner: &str,
    n: &mantissa_store::Stored<Note>,
    published: &[mantissa_store::Stored<Published>],
    shares: &[mantissa_store::Stored<Share>],
    names: &HashMap<AccountId, String>,
) -> NoteEntry {
    let id = n.id().id();
    NoteEntry {
        id,
        title: n.title.clone(),
        body: n.body.clone(),
        url: published
            .iter()
            .find(|p| p.item_id == id)
            .map(|p| format!("/users/{owner}/{}", p.slug)),
        shares: shares
            .iter()
            .filter(|s| s.item_id == id)
            .map(|s| ShareEntry {
                role: s.role.clone(),
                label: role_label(&s.role, names),
                capabilities: s.capabilities.replace(',', ", "),
            })
            .collect(),
    }
}

/// Note `id` of `owner`, as the list shows it; none if they have no such
/// note.
async fn note_entry(app: &App, owner: &Owner, id: i64) -> Result<Option<NoteEntry>, WebError> {
    let found = owner
        .store
        .read(move |r| -> mantissa_store::Result<_> {
            let Some(note) = r.find(Ref::<Note>::from_id(id))? else {
                return Ok(None);
            };
            let published = r
                .query::<Published>()
                .filter(Published::item_type.eq(Note::NAME))
                .filter(Published::item_id.eq(id))
                .filter(Published::moved_to.is_null())
                .all()?;
            let shares = r
                .query::<Share>()
                .filter(Share::item_type.eq(Note::NAME))
                .filter(Share::item_id.eq(id))
                .all()?;
            Ok(Some((note, published, shares)))
        })
        .await?;
    let Some((note, published, shares)) = found else {
        return Ok(None);
    };
    let mut ids: Vec<AccountId> = shares
        .iter()
        .filter_map(|s| match Role::from_key(&s.role) {
            Some(Role::User(a)) => Some(a),
            _ => None,
        })
        .collect();
    ids.dedup();
    let site = app.site().clone();
    let names = tokio::task::spawn_blocking(move || account_names(&site, &ids))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    Ok(Some(entry(&owner.name, &note, &published, &shares, &names)))
}

/// Writes a note, and publishes it (visible to nobody else until it is
/// shared) at an address made from its title.
#[utoipa::path(
    post,
    path = "/",
    operation_id = "create_note",
    tag = "notes",
    request_body(
        description = "The note",
        content(
            (NewNote = "application/json"),
            (NewNote = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(
        (status = 201, description = "The note written; Location is its published address",
            body = NoteEntry,
            headers(("Location" = String, description = "The note's published address, under /api"))),
        (status = "default", description = "A problem: 422 for a title that is missing, blank or too long",
            body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    JsonOrForm(form): JsonOrForm<NewNote>,
) -> Result<Response, WebError> {
    let title = form.title.trim().to_string();
    let refusal = if title.is_empty() {
        Some("A note needs a title.".to_string())
    } else if title.chars().count() > TITLE_MAX {
        Some(format!(
            "A note's title can be at most {TITLE_MAX} characters long."
        ))
    } else {
        None
    };
    // Shown again in the form, with what was typed (422; under /api/, a
    // problem with the same words).
    if let Some(message) = refusal {
        let draft = Draft {
            title: form.title,
            body: form.body,
            message,
        };
        return Ok(list_page(app, owner, None, Some(draft), 1)
            .await?
            .into_response());
    }
    let id = owner
        .store
        .write(move |tx| -> Result<_, WebError> {
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
            mantissa_web::publish(tx, "notes", note, &slug)?;
            Ok(note.id())
        })
        .await?;
    let note = note_entry(&app, &owner, id)
        .await?
        .ok_or_else(|| WebError::Internal("a note just written is gone".into()))?;
    let location = note.url.as_ref().map(|url| format!("/api{url}"));
    Ok(
        Written::created(note, location, mantissa_web::done_url(BACK, "notes-saved"))
            .into_response(),
    )
}

/// Shares a note with everyone, with every signed-in user or with one user,
/// to view it or to view and edit it.
#[utoipa::path(
    post,
    path = "/{id}/share",
    operation_id = "share_note",
    tag = "notes",
    params(("id" = i64, Path, description = "The note's id")),
    request_body(
        description = "Who to share it with",
        content(
            (ShareForm = "application/json"),
            (ShareForm = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "The note, shared", body = NoteEntry),
        (status = "default", description = "A problem: 404 for a note the user does not have, \
            422 for a user name nobody has", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn share_note(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
    JsonOrForm(form): JsonOrForm<ShareForm>,
) -> Result<Response, WebError> {
    let role = match form.role {
        ShareWith::Everyone => Role::Everyone,
        ShareWith::SignedIn => Role::SignedIn,
        ShareWith::User => {
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
                    let problem = ShareRefused {
                        note: id,
                        user: typed,
                        message,
                    };
                    return Ok(list_page(app, owner, Some(problem), None, 1)
                        .await?
                        .into_response());
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let capabilities: &[&str] = if form.edit {
        &["view", "edit"]
    } else {
        &["view"]
    };
    on_own_note(app, owner, id, "notes-shared", move |tx, note| {
        share(tx, note, role, capabilities)
    })
    .await
    .map(IntoResponse::into_response)
}

/// Does `change` to the owner's note `id`, then answers with the note (a
/// page goes back to the list); a 404 if they have no such note.
async fn on_own_note<E>(
    app: App,
    owner: Owner,
    id: i64,
    done: &'static str,
    change: impl FnOnce(&mut Write<'_>, Ref<Note>) -> Result<(), E> + Send + 'static,
) -> Result<Written, WebError>
where
    E: From<StoreError> + Send + 'static,
    WebError: From<E>,
{
    let found = owner
        .store
        .write(move |tx| -> Result<_, E> {
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
    let note = note_entry(&app, &owner, id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(Written::changed(note, mantissa_web::done_url(BACK, done)))
}

/// Stops sharing a note with someone.
#[utoipa::path(
    post,
    path = "/{id}/unshare",
    operation_id = "unshare_note",
    tag = "notes",
    params(("id" = i64, Path, description = "The note's id")),
    request_body(
        description = "The share to stop",
        content(
            (UnshareForm = "application/json"),
            (UnshareForm = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "The note, no longer shared so", body = NoteEntry),
        (status = "default", description = "A problem: 404 for a note the user does not have, \
            400 for a role that is no share", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn unshare_note(
    State(app): State<App>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<i64>,
    JsonOrForm(form): JsonOrForm<UnshareForm>,
) -> Result<Written, WebError> {
    let role = Role::from_key(form.role.trim())
        .ok_or_else(|| WebError::BadRequest(format!("{:?} is not a share.", form.role)))?;
    on_own_note(app, owner, id, "notes-unshared", move |tx, note| {
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

    fn install(&self, tx: &mut mantissa_store::Write<'_>) -> Result<(), InstallError> {
        tx.insert(&Note {
            title: "Welcome".into(),
            body: "Your first note.".into(),
        })?;
        Ok(())
    }

    fn private_api(&self) -> OpenApiRouter<App> {
        OpenApiRouter::new()
            .routes(routes!(list, create))
            .routes(routes!(share_note))
            .routes(routes!(unshare_note))
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
