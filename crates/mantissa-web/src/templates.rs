//! Page templates: minijinja, autoescaped, with themes.
//!
//! A template name is looked up first in the site's theme folder
//! (`<site>/themes/<theme>/templates/`), then in the offerings' own
//! templates, then in Mantissa's defaults — so a theme overrides any
//! template by name, as Mantissa's theme resolution did. In production the
//! templates are loaded once; in development (`--dev`) every render reads
//! them afresh, so edits show on the next reload without a file watcher.
//!
//! Every value printed into HTML is escaped, and text that looks like an
//! email address is further written as character references, which people's
//! browsers show normally and address harvesters mostly do not decode.
//!
//! While a theme is in use, renders run on a budget (minijinja's fuel), so
//! that a theme template that loops for ever ends in a template error
//! instead of holding a worker; the templates compiled into the binary, like
//! the rest of its code, run without one.
//!
//! The template language is minijinja's Jinja, less `loop.previtem` and
//! `loop.nextitem`: supporting them makes every loop step take a lock
//! (minijinja's `adjacent_loop_items` feature, left out in the workspace's
//! `Cargo.toml`), and loops are what pages spend their time in. A template
//! that needs its neighbours can use `loop.index0` on the list, or
//! `loop.changed(...)`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use minijinja::{Environment, Error, ErrorKind, Output, State, Value, escape_formatter};

use crate::reveal::Reveals;

/// Where templates come from, in the order they are looked up.
#[derive(Clone)]
pub struct TemplateSources {
    /// The active theme's template folder, if any.
    pub theme_dir: Option<PathBuf>,
    /// Templates compiled into the binary by offerings and Mantissa,
    /// by name. Later registrations do not replace earlier ones.
    pub builtin: Arc<HashMap<String, &'static str>>,
    /// The folders offerings' templates are compiled in from
    /// ([`Offering::template_dir`](crate::Offering::template_dir)), read
    /// before the compiled-in copies in development only.
    pub source_dirs: Vec<PathBuf>,
}

/// A rendering failure, with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("template {name}, line {line}: {cause}")]
pub struct TemplateError {
    /// The template file.
    pub name: String,
    /// The line (0 if unknown).
    pub line: usize,
    /// What went wrong.
    pub cause: String,
}

impl From<Error> for TemplateError {
    fn from(e: Error) -> Self {
        TemplateError {
            name: e.name().unwrap_or("?").to_string(),
            line: e.line().unwrap_or(0),
            cause: match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            },
        }
    }
}

/// What a render may spend when a theme is in use (minijinja's fuel: about
/// one per instruction), far more than any real page needs.
const THEME_FUEL: u64 = 2_000_000;

/// The names of the template files under `dir` (`a/b.html` for
/// `dir/a/b.html`), hidden files left out.
fn template_files(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                names.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    names
}

/// The template engine.
pub struct Templates {
    sources: RwLock<TemplateSources>,
    dev: bool,
    cached: RwLock<Option<Arc<Environment<'static>>>>,
    globals: Vec<(&'static str, Value)>,
    reveals: Option<Arc<Reveals>>,
}

/// Writes text as escaped HTML, with its e-mail addresses hidden behind
/// reveal links on public pages seen by visitors who are not signed in
/// (`reveals`, see [`crate::reveal`]), and as character references
/// elsewhere.
fn address_hiding_formatter(
    reveals: Option<Arc<Reveals>>,
) -> impl Fn(&mut Output<'_>, &State<'_, '_>, &Value) -> Result<(), Error> + Send + Sync + 'static {
    move |out, state, value| {
        // Text templates (a mail's `.txt`) are not escaped, and their
        // addresses are written as they are: a mail reader does not decode
        // character references.
        if let Some(s) = value.as_str()
            && s.contains('@')
            && !value.is_safe()
            && matches!(state.auto_escape(), minijinja::AutoEscape::Html)
        {
            let hiding = state
                .lookup("hiding_addresses")
                .is_some_and(|h| h.is_true());
            let html = match &reveals {
                Some(r) if hiding => r.hide_in_html(s),
                _ => obfuscate_emails(s),
            };
            return out
                .write_str(&html)
                .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()));
        }
        escape_formatter(out, state, value)
    }
}

/// Escapes plain `text` for HTML, writing every e-mail address in it as
/// decimal character references (the addresses are those of
/// the `reveal` module's search; the characters around them are escaped as
/// usual).
///
/// It takes the text before escaping: escaping first turned `<` into
/// `&lt;`, whose characters were then written as references in turn, and
/// the page showed `&lt;ann@example.org&gt;`.
///
/// ```
/// use mantissa_web::obfuscate_emails;
///
/// assert_eq!(obfuscate_emails("a&b <i>"), "a&amp;b &lt;i&gt;");
/// assert_eq!(obfuscate_emails("<a@b.c>"), "&lt;&#97;&#64;&#98;&#46;&#99;&gt;");
/// ```
pub fn obfuscate_emails(text: &str) -> String {
    crate::reveal::references_in_html(text)
}

/// `n` and a noun, in the plural when `n` is not 1: `count(1, "user")` is
/// "1 user", `count(2, "user")` "2 users", `count(2, "query", "queries")`
/// "2 queries". Numbers of five digits and more are grouped by thousands
/// ("12,500 users"). A template function.
pub fn count(n: i64, one: &str, many: Option<&str>) -> String {
    let noun = if n == 1 {
        one.to_string()
    } else {
        many.map_or_else(|| format!("{one}s"), str::to_string)
    };
    format!("{} {noun}", grouped(n))
}

fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    if digits.len() < 5 {
        return n.to_string();
    }
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A time as people read it, from `now`: "just now", "5 minutes ago",
/// "in 2 hours", "3 days ago", and past 60 days either way the date ("on
/// 2026-08-16"). Pages have no JavaScript to turn a time into the reader's
/// time zone, so they say how long ago, which needs none; the `time`
/// template filter puts the exact UTC time beside it.
///
/// ```
/// use mantissa_store::Timestamp;
///
/// let now = Timestamp::parse("2026-12-07T12:00:00Z").unwrap();
/// let then = Timestamp::parse("2026-12-07T09:00:00Z").unwrap();
/// assert_eq!(mantissa_web::relative_time(then, now), "3 hours ago");
/// ```
pub fn relative_time(then: mantissa_store::Timestamp, now: mantissa_store::Timestamp) -> String {
    let secs = (now.as_micros() - then.as_micros()) / 1_000_000;
    let span = |s: i64| match s {
        s if s < 3600 => count(s / 60, "minute", None),
        s if s < 86_400 => count(s / 3600, "hour", None),
        s => count(s / 86_400, "day", None),
    };
    match secs {
        s if s.abs() < 60 => "just now".to_string(),
        s if !(-60 * 86_400..60 * 86_400).contains(&s) => {
            let iso = then.to_string();
            format!("on {}", iso.get(..10).unwrap_or(&iso))
        }
        s if s < 0 => format!("in {}", span(-s)),
        s => format!("{} ago", span(s)),
    }
}

/// `then` to the minute in UTC: "2026-12-07 09:00 UTC".
pub fn utc_minute(then: mantissa_store::Timestamp) -> String {
    let iso = then.to_string();
    match (iso.get(..10), iso.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => iso,
    }
}

/// The `time` filter: an RFC 3339 time (as items' timestamps are written)
/// as a `<time>` element saying how long ago, with the exact UTC time on
/// hover; anything else is written as it is.
fn time_element(value: &str) -> Value {
    match mantissa_store::Timestamp::parse(value) {
        Ok(then) => Value::from_safe_string(format!(
            "<time datetime=\"{}\" title=\"{}\">{}</time>",
            then,
            utc_minute(then),
            relative_time(then, mantissa_store::Timestamp::now())
        )),
        Err(_) => Value::from(value),
    }
}

/// A size in bytes as people read it: "512 bytes", "1.5 KB", "786 KB",
/// "2.1 GB" (powers of 1,000, as disks are sold). A template filter.
pub fn filesize(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return count(bytes as i64, "byte", None);
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

impl Templates {
    /// Templates from `sources`; `dev` reloads them on every render.
    pub fn new(sources: TemplateSources, dev: bool, globals: Vec<(&'static str, Value)>) -> Self {
        Templates {
            sources: RwLock::new(sources),
            dev,
            cached: RwLock::new(None),
            globals,
            reveals: None,
        }
    }

    /// Hides the e-mail addresses of text from visitors who are not signed
    /// in, behind reveal links sealed by `reveals`.
    pub fn hiding_addresses_with(mut self, reveals: Arc<Reveals>) -> Self {
        self.reveals = Some(reveals);
        self
    }

    fn build(&self) -> Environment<'static> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // In production a template is read once, even one that fails to
        // compile: what is served does not change until a restart.
        let dev = self.dev;
        let read: Arc<std::sync::Mutex<HashMap<String, Option<String>>>> = Default::default();
        let mut env = Environment::new();
        env.set_formatter(address_hiding_formatter(self.reveals.clone()));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // Bound what a theme's templates can cost: they are files anyone
        // with the site's folder can edit, and a loop in one could hold a
        // worker for ever. The templates compiled into the binary are code
        // like the rest of it, and go without: fuel is counted with an
        // atomic per instruction, a fifth of the Fortunes page's render
        // time (`bench/README.md`, "Web").
        if sources.theme_dir.is_some() {
            env.set_fuel(Some(THEME_FUEL));
        }
        env.set_recursion_limit(64);
        env.add_function("count", |n: i64, one: &str, many: Option<&str>| {
            count(n, one, many)
        });
        env.add_filter("filesize", |bytes: u64| filesize(bytes));
        env.add_filter("time", |value: &str| time_element(value));
        for (name, value) in &self.globals {
            env.add_global(*name, value.clone());
        }
        env.set_loader(move |name| {
            if name.contains("..") || name.starts_with('/') {
                return Ok(None);
            }
            if !dev && let Some(source) = read.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
                return Ok(source.clone());
            }
            let source = Self::load(&sources, name, dev)?;
            if !dev {
                read.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), source.clone());
            }
            Ok(source)
        });
        env
    }

    fn load(sources: &TemplateSources, name: &str, dev: bool) -> Result<Option<String>, Error> {
        let sources_read = if dev { &sources.source_dirs[..] } else { &[] };
        for dir in sources.theme_dir.iter().chain(sources_read) {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("cannot read template {name} in {}: {e}", dir.display()),
                    ));
                }
            }
        }
        Ok(sources.builtin.get(name).map(|s| s.to_string()))
    }

    /// Compiles every template the site can render (Mantissa's, the
    /// offerings', the theme's), and says which fail and why: `serve`
    /// checks them all when the site starts, instead of when a page first
    /// needs one. Syntax is checked; what only a render can tell (a
    /// template it extends that is missing, a value of the wrong type) is
    /// not.
    pub fn check_all(&self) -> Vec<TemplateError> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut names: Vec<String> = sources.builtin.keys().cloned().collect();
        if let Some(dir) = &sources.theme_dir {
            names.extend(template_files(dir));
        }
        if self.dev {
            for dir in &sources.source_dirs {
                names.extend(template_files(dir));
            }
        }
        names.sort();
        names.dedup();
        let env = self.env();
        names
            .iter()
            .filter_map(|name| env.get_template(name).err().map(TemplateError::from))
            .collect()
    }

    /// The environment to render with.
    pub fn env(&self) -> Arc<Environment<'static>> {
        if self.dev {
            return Arc::new(self.build());
        }
        if let Some(env) = self
            .cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return env.clone();
        }
        let env = Arc::new(self.build());
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some(env.clone());
        env
    }

    /// Switches theme (the next render uses it).
    pub fn set_theme_dir(&self, dir: Option<PathBuf>) {
        self.sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .theme_dir = dir;
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Renders template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let env = self.env();
        let t = env.get_template(name)?;
        Ok(t.render(ctx)?)
    }

    /// Whether templates reload on every render.
    pub fn is_dev(&self) -> bool {
        self.dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(files: &[(&str, &'static str)]) -> Templates {
        let builtin = files.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        Templates::new(
            TemplateSources {
                theme_dir: None,
                builtin: Arc::new(builtin),
                source_dirs: Vec::new(),
            },
            false,
            vec![],
        )
    }

    #[test]
    fn times_read_relative_with_the_exact_utc_time_beside() {
        use mantissa_store::Timestamp;
        let now = Timestamp::from_micros(1_700_000_000_000_000);
        let ago = |secs: i64| {
            relative_time(
                Timestamp::from_micros(now.as_micros() - secs * 1_000_000),
                now,
            )
        };
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(3 * 3600 + 5), "3 hours ago");
        assert_eq!(ago(2 * 86_400), "2 days ago");
        assert_eq!(ago(90 * 86_400), "on 2023-08-16");
        assert_eq!(ago(-2 * 3600), "in 2 hours");
        assert_eq!(utc_minute(now), "2023-11-14 22:13 UTC");

        let t = templates(&[("t.html", "{{ at | time }}|{{ other | time }}")]);
        let out = t
            .render(
                "t.html",
                &minijinja::context! { at => "2023-11-14T22:13:20Z", other => "<b>soon</b>" },
            )
            .unwrap();
        assert_eq!(
            out,
            "<time datetime=\"2023-11-14T22:13:20Z\" title=\"2023-11-14 22:13 UTC\">on 2023-11-14</time>|&lt;b&gt;soon&lt;&#x2f;b&gt;"
        );
    }

    #[test]
    fn loops_have_their_counters_and_changed_but_not_adjacent_items() {
        let t = templates(&[(
            "l.html",
            "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{% if loop.changed(x) %}!{% endif %}[{{ loop.previtem }}]{{ xs[loop.index0 - 1] if not loop.first }};{% endfor %}",
        )]);
        let out = t
            .render("l.html", &minijinja::context! { xs => vec!["a", "a", "b"] })
            .unwrap();
        assert_eq!(out, "1/3![];2/3[]a;3/3![]a;");
    }

    #[test]
    fn values_are_escaped_and_emails_obfuscated() {
        let t = templates(&[("p.html", "<p>{{ a }}|{{ b }}</p>")]);
        let out = t
            .render(
                "p.html",
                &minijinja::context! { a => "<script>alert(1)</script>", b => "mail me@example.org now" },
            )
            .unwrap();
        assert_eq!(
            out,
            "<p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt;|mail &#109;&#101;&#64;&#101;&#120;&#97;&#109;&#112;&#108;&#101;&#46;&#111;&#114;&#103; now</p>"
        );
    }

    #[test]
    fn a_theme_template_that_loops_for_ever_is_stopped_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("spin.html"),
            "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}",
        )
        .unwrap();
        let t = templates(&[("ok.html", "{% for x in range(3) %}{{ x }}{% endfor %}")]);
        t.set_theme_dir(Some(dir.path().to_path_buf()));
        let e = t.render("spin.html", &Value::UNDEFINED).unwrap_err();
        assert_eq!(e.name, "spin.html");
        assert!(e.cause.contains("fuel"), "{e}");
        // The budget is far above what pages need.
        assert_eq!(t.render("ok.html", &Value::UNDEFINED).unwrap(), "012");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let t = templates(&[("bad.html", "line one\n{% if %}\n")]);
        let e = t.render("bad.html", &Value::UNDEFINED).unwrap_err();
        assert_eq!((e.name.as_str(), e.line), ("bad.html", 2));
        assert!(e.cause.starts_with("syntax error"), "{e}");
    }

    #[test]
    fn text_templates_are_neither_escaped_nor_obfuscated() {
        let t = templates(&[("m.txt", "Hello {{ a }} <{{ b }}>")]);
        let out = t
            .render(
                "m.txt",
                &minijinja::context! { a => "Ann & Bob", b => "ann@example.org" },
            )
            .unwrap();
        assert_eq!(out, "Hello Ann & Bob <ann@example.org>");
    }

    #[test]
    fn counts_and_sizes_read_as_people_write_them() {
        assert_eq!(count(1, "user", None), "1 user");
        assert_eq!(count(0, "user", None), "0 users");
        assert_eq!(count(2, "query", Some("queries")), "2 queries");
        assert_eq!(count(12_500, "user", None), "12,500 users");
        assert_eq!(count(1_234, "user", None), "1234 users");
        assert_eq!(filesize(1), "1 byte");
        assert_eq!(filesize(999), "999 bytes");
        assert_eq!(filesize(1_500), "1.5 KB");
        assert_eq!(filesize(786_552), "787 KB");
        assert_eq!(filesize(999_999), "1.0 MB");
        assert_eq!(filesize(2_100_000_000), "2.1 GB");
        let t = templates(&[("c.html", "{{ count(n, 'user') }}, {{ b | filesize }}")]);
        let out = t
            .render("c.html", &minijinja::context! { n => 1, b => 786552 })
            .unwrap();
        assert_eq!(out, "1 user, 787 KB");
    }
}
