//! `mantissa new` and `mantissa generate`: a site crate that builds and runs
//! at once, and the pieces added to it later.
//!
//! The files are written from templates compiled into the binary
//! (`crates/mantissa/scaffold/`), with plain `__NAME__`-style placeholders
//! rather than a template engine: the files are themselves Rust and Jinja,
//! whose `{{ }}` a template engine would take for its own. `generate` edits
//! the crate only at the marker comments `new` wrote
//! (`// mantissa generate: …`), and refuses, changing nothing, when they are
//! gone, rather than guess where code goes in a file someone rewrote.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a crate could not be made or added to.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// A name that cannot be a crate's, an offering's or an item's.
    #[error("{0}")]
    Name(String),
    /// The folder is there already and not empty.
    #[error("{} exists already and is not empty: choose a new folder", .0.display())]
    Exists(PathBuf),
    /// Where Mantissa's source is could not be found.
    #[error(
        "Mantissa's source is not at {}: say where its checkout is with --mantissa PATH",
        .0.display()
    )]
    NoMantissa(PathBuf),
    /// `generate` was run outside a crate made by `mantissa new`.
    #[error("{0}")]
    NotASite(String),
    /// What `generate` would add is there already.
    #[error("{0}")]
    Taken(String),
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ScaffoldError>;

/// The files of a new site crate: (path, template).
const NEW_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../scaffold/Cargo.toml.in")),
    (".gitignore", include_str!("../../scaffold/gitignore.in")),
    ("README.md", include_str!("../../scaffold/README.md.in")),
    ("src/main.rs", include_str!("../../scaffold/src/main.rs.in")),
    ("src/lib.rs", include_str!("../../scaffold/src/lib.rs.in")),
    (
        "src/posts.rs",
        include_str!("../../scaffold/src/posts.rs.in"),
    ),
    (
        "templates/posts/list.html",
        include_str!("../../scaffold/templates/posts/list.html"),
    ),
    (
        "templates/posts/post.html",
        include_str!("../../scaffold/templates/posts/post.html"),
    ),
    (
        "tests/posts.rs",
        include_str!("../../scaffold/tests/posts.rs.in"),
    ),
];

/// Where this binary was built from: the `mantissa` crate's folder in the
/// checkout, the default dependency of a new site.
const BUILT_FROM: &str = env!("CARGO_MANIFEST_DIR");

const MODULES_MARK: &str = "// mantissa generate: modules";
const OFFERINGS_MARK: &str = "// mantissa generate: offerings";
const TEMPLATES_MARK: &str = "// mantissa generate: templates";
const ROUTES_MARK: &str = "// mantissa generate: routes";

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ScaffoldError {
    let path = path.to_path_buf();
    move |source| ScaffoldError::Io { what, path, source }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_error("cannot read", path))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("cannot create", parent))?;
    }
    std::fs::write(path, text).map_err(io_error("cannot write", path))
}

/// A TOML basic string of `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A crate's name: lowercase ASCII letters, digits, `-` and `_`, starting
/// with a letter, and not a name Rust or cargo keeps for itself.
fn check_crate_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(ScaffoldError::Name(format!(
            "{name:?} cannot name a crate: use lowercase letters, digits, - and _, starting with a letter (like my-site)"
        )));
    }
    if [
        "mantissa",
        "test",
        "core",
        "std",
        "alloc",
        "proc_macro",
        "self",
        "crate",
    ]
    .contains(&name.replace('-', "_").as_str())
    {
        return Err(ScaffoldError::Name(format!(
            "{name:?} is taken by Rust or by Mantissa itself: choose another name"
        )));
    }
    Ok(())
}

/// A module's (an offering's, a page's) name: a Rust identifier in
/// snake case.
fn check_snake(what: &str, name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok || is_keyword(name) {
        return Err(ScaffoldError::Name(format!(
            "{name:?} cannot name {what}: use lowercase letters, digits and _, starting with a letter (like recipes)"
        )));
    }
    Ok(())
}

fn is_keyword(name: &str) -> bool {
    [
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
        "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final",
        "gen", "macro", "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
    ]
    .contains(&name)
}

/// `recipe_card` → `RecipeCard`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `RecipeCard` → `recipe_card`.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `mantissa new DIR`: writes a site crate named after DIR's last part,
/// depending on the Mantissa at `mantissa` (its checkout, or its
/// `crates/mantissa` folder), by default the one this binary was built from.
pub fn new_site(dir: &Path, mantissa: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ScaffoldError::Name(format!("{} has no name", dir.display())))?
        .to_string();
    check_crate_name(&name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io_error("cannot read", dir))?
            .next()
            .is_some()
    {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let facade = mantissa_crate(mantissa)?;
    let dep = format!(
        "{{ path = {} }}",
        toml_string(&facade.display().to_string())
    );
    let dep_testing = format!(
        "{{ path = {}, features = [\"testing\"] }}",
        toml_string(&facade.display().to_string())
    );
    let crate_ident = name.replace('-', "_");
    for (path, template) in NEW_FILES {
        let text = template
            .replace("__MANTISSA_TESTING__", &dep_testing)
            .replace("__MANTISSA__", &dep)
            .replace("__CRATE__", &crate_ident)
            .replace("__NAME__", &name);
        write_new(&dir.join(path), &text)?;
    }
    // The versions Mantissa is tested with, as a start (cargo adds and
    // drops what this crate needs otherwise).
    if let Some(lock) = facade
        .parent()
        .and_then(Path::parent)
        .map(|c| c.join("Cargo.lock"))
        && lock.is_file()
    {
        let text = read(&lock)?;
        write_new(&dir.join("Cargo.lock"), &text)?;
    }
    let shown = dir.display();
    writeln!(out, "Created the site crate {name} in {shown}, with an example offering (src/posts.rs).")
        .and_then(|()| {
            writeln!(
                out,
                "Next:\n  cd {shown}\n  cargo run -- serve --dev --site site   # the site at http://127.0.0.1:8080/\n  cargo test"
            )
        })
        .map_err(io_error("cannot write to", Path::new("standard output")))
}

/// The `mantissa` crate's folder: `given` (a checkout or the crate itself),
/// or the one this binary was built from.
fn mantissa_crate(given: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.join("crates/mantissa"), p.to_path_buf()],
        None => vec![PathBuf::from(BUILT_FROM)],
    };
    for c in &candidates {
        if c.join("Cargo.toml").is_file() && c.join("src/lib.rs").is_file() {
            return std::path::absolute(c).map_err(io_error("cannot resolve", c));
        }
    }
    Err(ScaffoldError::NoMantissa(candidates[0].clone()))
}

/// What `mantissa generate` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// An offering: its module, a page, a template, linked in `main.rs`.
    Offering,
    /// An item type, in an offering's module.
    Item,
    /// A page of an offering: a handler, its template, its route.
    Page,
}

/// The crate `generate` works on: its folder and its name as a Rust path.
struct SiteCrate {
    dir: PathBuf,
    ident: String,
}

impl SiteCrate {
    fn find(dir: &Path) -> Result<SiteCrate> {
        let manifest = dir.join("Cargo.toml");
        let lib = dir.join("src/lib.rs");
        if !manifest.is_file() || !lib.is_file() {
            return Err(ScaffoldError::NotASite(format!(
                "{} is not a site crate made by `mantissa new` (no Cargo.toml and src/lib.rs): run this in one, or make one with `mantissa new NAME`",
                dir.display()
            )));
        }
        let text = read(&manifest)?;
        let name = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
            })
            .ok_or_else(|| {
                ScaffoldError::NotASite(format!("{} names no package", manifest.display()))
            })?;
        Ok(SiteCrate {
            dir: dir.to_path_buf(),
            ident: name.replace('-', "_"),
        })
    }

    /// The offering `given`, or the first module `lib.rs` declares.
    fn offering(&self, given: Option<&str>) -> Result<String> {
        if let Some(o) = given {
            check_snake("an offering", o)?;
            if !self.dir.join(format!("src/{o}.rs")).is_file() {
                return Err(ScaffoldError::NotASite(format!(
                    "there is no offering {o} (src/{o}.rs): make it with `mantissa generate offering {o}`"
                )));
            }
            return Ok(o.to_string());
        }
        let lib = read(&self.dir.join("src/lib.rs"))?;
        lib.lines()
            .find_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string))
            .ok_or_else(|| {
                ScaffoldError::NotASite(
                    "src/lib.rs declares no offering module: make one with `mantissa generate offering NAME`".into(),
                )
            })
    }

    /// Inserts `line` before the marker comment in `file`, with the
    /// marker's indentation.
    fn insert_at(&self, file: &str, mark: &str, line: &str) -> Result<()> {
        let path = self.dir.join(file);
        let text = read(&path)?;
        let at = text.find(mark).ok_or_else(|| {
            ScaffoldError::NotASite(format!(
                "{file} has no `{mark}` line, where this goes: add it back, or add the code by hand"
            ))
        })?;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let indent = &text[line_start..at];
        let mut new = String::with_capacity(text.len() + line.len() + indent.len() + 1);
        new.push_str(&text[..line_start]);
        new.push_str(indent);
        new.push_str(line);
        new.push('\n');
        new.push_str(&text[line_start..]);
        std::fs::write(&path, new).map_err(io_error("cannot write", &path))
    }

    /// Checks that every marker is there before anything is written, so
    /// that a refusal changes nothing.
    fn require(&self, file: &str, marks: &[&str]) -> Result<()> {
        let text = read(&self.dir.join(file))?;
        for mark in marks {
            if !text.contains(mark) {
                return Err(ScaffoldError::NotASite(format!(
                    "{file} has no `{mark}` line, where this goes: add it back, or add the code by hand"
                )));
            }
        }
        Ok(())
    }
}

/// `mantissa generate offering|item|page NAME` in the site crate at `dir`.
pub fn generate(
    dir: &Path,
    piece: Piece,
    name: &str,
    offering: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let site = SiteCrate::find(dir)?;
    let said = match piece {
        Piece::Offering => generate_offering(&site, name)?,
        Piece::Item => generate_item(&site, name, offering)?,
        Piece::Page => generate_page(&site, name, offering)?,
    };
    writeln!(out, "{said}").map_err(io_error("cannot write to", Path::new("standard output")))
}

fn generate_offering(site: &SiteCrate, name: &str) -> Result<String> {
    check_snake("an offering", name)?;
    let module = site.dir.join(format!("src/{name}.rs"));
    if module.exists() {
        return Err(ScaffoldError::Taken(format!(
            "src/{name}.rs exists already"
        )));
    }
    site.require("src/lib.rs", &[MODULES_MARK])?;
    site.require("src/main.rs", &[OFFERINGS_MARK])?;
    let ty = camel(name);
    let fill = |t: &str| {
        t.replace("__OFFERING__", name)
            .replace("__TYPE__", &ty)
            .replace("__CRATE__", &site.ident)
    };
    write_new(&module, &fill(OFFERING_RS))?;
    write_new(
        &site.dir.join(format!("templates/{name}/index.html")),
        &fill(OFFERING_INDEX),
    )?;
    site.insert_at("src/lib.rs", MODULES_MARK, &format!("pub mod {name};"))?;
    site.insert_at(
        "src/main.rs",
        OFFERINGS_MARK,
        &format!("Arc::new({}::{name}::{ty}),", site.ident),
    )?;
    Ok(format!(
        "Added the offering {name}: src/{name}.rs and templates/{name}/index.html, linked in src/main.rs. Its page is /private/{name}/."
    ))
}

fn generate_item(site: &SiteCrate, name: &str, offering: Option<&str>) -> Result<String> {
    let ty = camel(&snake(name));
    if ty.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ScaffoldError::Name(format!(
            "{name:?} cannot name an item type: use a name like Comment or recipe_card"
        )));
    }
    check_snake("an item type", &snake(&ty))?;
    let offering = site.offering(offering)?;
    let module = site.dir.join(format!("src/{offering}.rs"));
    let text = read(&module)?;
    if text.contains(&format!("pub struct {ty} ")) || text.contains(&format!("pub struct {ty}{{")) {
        return Err(ScaffoldError::Taken(format!(
            "src/{offering}.rs declares {ty} already"
        )));
    }
    let item_name = format!("{offering}.{}", snake(&ty));
    let code = ITEM_RS
        .replace("__TYPE__", &ty)
        .replace("__ITEM__", &item_name);
    let mut new = text;
    if !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&code);
    std::fs::write(&module, new).map_err(io_error("cannot write", &module))?;
    Ok(format!(
        "Added the item type {ty} (\"{item_name}\", version 1) to src/{offering}.rs: give it its fields, and raise its version with every change of them once it is in use."
    ))
}

fn generate_page(site: &SiteCrate, name: &str, offering: Option<&str>) -> Result<String> {
    check_snake("a page", name)?;
    let offering = site.offering(offering)?;
    let file = format!("src/{offering}.rs");
    let template = site.dir.join(format!("templates/{offering}/{name}.html"));
    if template.exists() {
        return Err(ScaffoldError::Taken(format!(
            "templates/{offering}/{name}.html exists already"
        )));
    }
    if read(&site.dir.join(&file))?.contains(&format!("fn {name}_page(")) {
        return Err(ScaffoldError::Taken(format!(
            "{file} has {name}_page already"
        )));
    }
    site.require(&file, &[TEMPLATES_MARK, ROUTES_MARK])?;
    let fill = |t: &str| {
        t.replace("__OFFERING__", &offering)
            .replace("__PAGE__", name)
    };
    write_new(&template, &fill(PAGE_HTML))?;
    site.insert_at(
        &file,
        TEMPLATES_MARK,
        &format!(
            "(\"{offering}/{name}.html\", include_str!(\"../templates/{offering}/{name}.html\")),"
        ),
    )?;
    site.insert_at(
        &file,
        ROUTES_MARK,
        &format!(".route(\"/{name}\", mantissa::web::get({name}_page))"),
    )?;
    let path = site.dir.join(&file);
    let mut text = read(&path)?;
    text.push_str(&fill(PAGE_RS));
    std::fs::write(&path, text).map_err(io_error("cannot write", &path))?;
    Ok(format!(
        "Added the page /private/{offering}/{name}: {name}_page in {file}, and templates/{offering}/{name}.html."
    ))
}

const OFFERING_RS: &str = r#"//! __TYPE__: an offering. Its page for signed-in users is
//! `/private/__OFFERING__/`.

use mantissa::web::{App, Extension, Offering, Owner, Page, Router, WebError, get, json};

/// The offering.
pub struct __TYPE__;

impl Offering for __TYPE__ {
    fn name(&self) -> &'static str {
        "__OFFERING__"
    }

    // The navigation's link to /private/__OFFERING__.
    fn label(&self) -> Option<&'static str> {
        Some("__TYPE__")
    }

    fn templates(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "__OFFERING__/index.html",
                include_str!("../templates/__OFFERING__/index.html"),
            ),
            // mantissa generate: templates
        ]
    }

    // `serve --dev` reads the templates from here on every page.
    fn template_dir(&self) -> Option<std::path::PathBuf> {
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/templates").into())
    }

    fn private_routes(&self) -> Router<App> {
        Router::new().route("/", get(index))
        // mantissa generate: routes
    }
}

/// `/private/__OFFERING__/`.
async fn index(Extension(owner): Extension<Owner>) -> Result<Page, WebError> {
    Ok(Page::new(
        "__OFFERING__/index.html",
        json!({ "owner": owner.name }),
    ))
}
"#;

const OFFERING_INDEX: &str = r#"{% extends "base.html" %}
{% block title %}__TYPE__ · {{ site.name }}{% endblock %}
{% block main %}
<h1>__TYPE__</h1>
<p>Hello, {{ owner }}. This page is templates/__OFFERING__/index.html.</p>
{% endblock %}
"#;

const ITEM_RS: &str = r#"
/// A __TYPE__, in its owner's store. (Made by `mantissa generate item`.)
#[derive(mantissa::store::Item, Debug, Clone)]
#[item(name = "__ITEM__", version = 1)]
pub struct __TYPE__ {
    /// Its title.
    pub title: String,
    /// When it was made.
    #[item(index)]
    pub created: mantissa::Timestamp,
}
"#;

const PAGE_RS: &str = r#"
/// `/private/__OFFERING__/__PAGE__`. (Made by `mantissa generate page`.)
async fn __PAGE___page(
    mantissa::web::Extension(owner): mantissa::web::Extension<mantissa::web::Owner>,
) -> mantissa::web::Page {
    mantissa::web::Page::new(
        "__OFFERING__/__PAGE__.html",
        mantissa::web::json!({ "owner": owner.name }),
    )
}
"#;

const PAGE_HTML: &str = r#"{% extends "base.html" %}
{% block title %}__PAGE__ · {{ site.name }}{% endblock %}
{% block main %}
<h1>__PAGE__</h1>
<p>This page is templates/__OFFERING__/__PAGE__.html, for {{ owner }}.</p>
{% endblock %}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_change_case() {
        assert_eq!(camel("recipe_card"), "RecipeCard");
        assert_eq!(snake("RecipeCard"), "recipe_card");
        assert_eq!(camel(&snake("Comment")), "Comment");
    }

    #[test]
    fn bad_names_are_refused_with_what_to_do() {
        for bad in ["My Site", "1site", "", "Site", "mantissa", "std"] {
            let e = check_crate_name(bad).unwrap_err().to_string();
            assert!(e.contains("name"), "{bad:?}: {e}");
        }
        check_crate_name("my-site").unwrap();
        assert!(check_snake("an offering", "fn").is_err());
        assert!(check_snake("an offering", "recipes").is_ok());
    }

    #[test]
    fn toml_strings_escape_quotes_and_backslashes() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }

    #[test]
    fn a_new_site_and_its_pieces_are_written_and_refused_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("my-site");
        let mut out = Vec::new();
        new_site(&site, None, &mut out).unwrap();
        let said = String::from_utf8(out).unwrap();
        assert!(said.contains("cargo run -- serve"), "{said}");
        let manifest = std::fs::read_to_string(site.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-site\""), "{manifest}");
        assert!(manifest.contains("crates/mantissa\" }"), "{manifest}");
        assert!(
            manifest.contains("[profile.dev.package.argon2]"),
            "{manifest}"
        );
        let main = std::fs::read_to_string(site.join("src/main.rs")).unwrap();
        assert!(main.contains("my_site::posts::Posts"), "{main}");
        // Not over a folder with something in it.
        assert!(matches!(
            new_site(&site, None, &mut Vec::new()),
            Err(ScaffoldError::Exists(_))
        ));

        let mut out = Vec::new();
        generate(&site, Piece::Offering, "recipes", None, &mut out).unwrap();
        let main = std::fs::read_to_string(site.join("src/main.rs")).unwrap();
        assert!(
            main.contains("Arc::new(my_site::recipes::Recipes),"),
            "{main}"
        );
        assert!(
            std::fs::read_to_string(site.join("src/lib.rs"))
                .unwrap()
                .contains("pub mod recipes;")
        );
        assert!(matches!(
            generate(&site, Piece::Offering, "recipes", None, &mut Vec::new()),
            Err(ScaffoldError::Taken(_))
        ));

        generate(&site, Piece::Item, "Comment", None, &mut Vec::new()).unwrap();
        let posts = std::fs::read_to_string(site.join("src/posts.rs")).unwrap();
        assert!(
            posts.contains("#[item(name = \"posts.comment\", version = 1)]"),
            "{posts}"
        );
        assert!(matches!(
            generate(&site, Piece::Item, "Comment", None, &mut Vec::new()),
            Err(ScaffoldError::Taken(_))
        ));

        generate(
            &site,
            Piece::Page,
            "about",
            Some("recipes"),
            &mut Vec::new(),
        )
        .unwrap();
        let recipes = std::fs::read_to_string(site.join("src/recipes.rs")).unwrap();
        assert!(recipes.contains(".route(\"/about\", mantissa::web::get(about_page))"));
        assert!(recipes.contains("async fn about_page("));
        assert!(site.join("templates/recipes/about.html").is_file());

        // A file without its marker: refused, and nothing written.
        std::fs::write(site.join("src/lib.rs"), "pub mod posts;\n").unwrap();
        let e = generate(&site, Piece::Offering, "blog", None, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("mantissa generate: modules"), "{e}");
        assert!(!site.join("src/blog.rs").exists());
        assert!(!site.join("templates/blog").exists());
    }
}
