//! The command line's arguments, parsed with clap, shared by every binary
//! that is "the `mantissa` command plus some offerings": see [`main_with`].

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mantissa_web::{Offering, Port};

use crate::cli;

/// Mantissa: an application platform in one binary.
///
/// Every command works on the site in the folder given by --site DIR or the
/// MANTISSA_SITE environment variable; else on the site in the current
/// folder, if it holds one; else on the default site folder,
/// ~/.local/share/mantissa/site ($XDG_DATA_HOME/mantissa/site when that is
/// set), which keeps a site's data out of any source tree. Logs go to
/// stderr; set MANTISSA_LOG (e.g. `info`, `mantissa_store=debug`) to see
/// more than warnings.
#[derive(Parser)]
#[command(name = "mantissa", version)]
struct Args {
    /// The site's folder [default: the current folder if it holds a site,
    /// else ~/.local/share/mantissa/site]
    #[arg(long, global = true, env = "MANTISSA_SITE", value_name = "DIR")]
    site: Option<PathBuf>,

    /// Keep the site's stores in this PostgreSQL database
    /// (postgres://user@host:port/database) instead of SQLite files in
    /// the site's folder: every `mantissa serve` given the same database
    /// serves the same site. The role must not be a superuser.
    #[arg(long, global = true, env = "MANTISSA_STORE", value_name = "URL")]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a site crate in DIR that builds and runs at once
    ///
    /// Writes Cargo.toml (depending on this Mantissa's source), src/main.rs
    /// (the mantissa command line with an example offering), src/posts.rs
    /// (an item type, a list page, a form that writes, a published page),
    /// templates, a test and a README. DIR's last part names the crate.
    New {
        /// The folder to make (must not exist, or be empty)
        dir: PathBuf,
        /// Mantissa's checkout to depend on [default: the one this binary was built from]
        #[arg(long, value_name = "PATH")]
        mantissa: Option<PathBuf>,
    },
    /// Add an offering, an item type or a page to the site crate here
    Generate {
        /// offering, item or page
        #[arg(value_enum)]
        piece: GeneratePiece,
        /// Its name: `recipes` (offering, page), `Comment` (item)
        name: String,
        /// The offering an item or page goes in [default: the first in src/lib.rs]
        #[arg(long, value_name = "NAME")]
        offering: Option<String>,
    },
    /// Build and serve the site crate here with `serve --dev`, again after
    /// every change of its Rust sources
    ///
    /// Arguments after `--` go to `serve`: `mantissa dev -- --site site`.
    Dev {
        /// Arguments for `serve`
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Create a site (site.sqlite and users/) in DIR
    ///
    /// DIR defaults to --site, else the default site folder
    /// (~/.local/share/mantissa/site). If DIR has a site already, says so
    /// and leaves it unchanged.
    Init {
        /// The folder to create the site in (created if missing)
        dir: Option<PathBuf>,
    },
    /// Inspect and check the site's stores
    #[command(subcommand)]
    Store(StoreCommand),
    /// Copy the site, every store a consistent snapshot, into a new folder
    ///
    /// Safe while the site is running. DEST must not exist; the copy is a
    /// site of its own: check it with `mantissa --site DEST store check`.
    Backup {
        /// The backup folder to create
        dest: PathBuf,
    },
    /// Move the site's stores into a PostgreSQL database (--to), or out of
    /// one back into SQLite files in the site's folder (--from)
    ///
    /// Every store, item, attached file and scheduled entry is copied with
    /// its ids, and each store is checked against the original (rows
    /// counted and hashed). Stop serving the site first. An interrupted
    /// run resumes where it stopped when run again. A target that holds
    /// anything else is refused unless --replace. Then serve the site with
    /// `mantissa --store URL serve` (or without --store after --from).
    Migrate {
        /// The PostgreSQL database to move the site's SQLite stores into
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "from",
            conflicts_with = "from"
        )]
        to: Option<String>,
        /// The PostgreSQL database to move the site's stores out of, into
        /// SQLite files in the site's folder
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        /// Replace the target's stores of the same names when it has some
        #[arg(long)]
        replace: bool,
    },
    /// Accounts: add, list, show, approve, suspend, delete, set a password;
    /// move a user's store in and out of the site as a single file
    #[command(subcommand)]
    User(UserCommand),
    /// Serve the site (creating it) until Ctrl-C or SIGTERM
    ///
    /// Listens on the site's ports (see `mantissa port`), or on
    /// 127.0.0.1:8080 when it has none. Stopping is graceful: no new
    /// connections, requests in flight finish.
    Serve {
        /// Listen on ADDR (plain HTTP) instead of the site's ports
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Development mode: templates and theme files reload on every
        /// request, and template errors show in the page
        #[arg(long)]
        dev: bool,
        /// The address people reach the site at, like https://example.org
        /// (for links in mail, and passkeys, which need a domain name:
        /// https, or http://localhost); default: the first address served
        #[arg(long, value_name = "URL", env = "MANTISSA_URL", value_parser = site_url)]
        url: Option<String>,
    },
    /// The ports `mantissa serve` listens on
    #[command(subcommand)]
    Port(PortCommand),
    /// How people join the site: open, invitation, approval or closed
    #[command(subcommand)]
    Signup(SignupCommand),
    /// How the site sends mail (its sender address and SMTP relay), and
    /// what a bounce says
    #[command(subcommand)]
    Mail(MailCommand),
    /// The site's name, tagline, contact, theme and robots.txt
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Subcommand)]
enum MailCommand {
    /// Set the sender address and/or the relay (without a relay, mail is
    /// written to the outbox folder)
    Set {
        /// The address the site's mail comes from
        #[arg(long)]
        from: Option<String>,
        /// HOST:PORT of the SMTP relay ("" for the outbox folder)
        #[arg(long)]
        relay: Option<String>,
        /// The relay uses implicit TLS (port 465); otherwise STARTTLS when offered
        #[arg(long)]
        tls: bool,
        /// Relay user name
        #[arg(long)]
        user: Option<String>,
        /// Read the relay password from standard input; it is kept sealed
        /// with the site's secret key (MANTISSA_SECRET_KEY, or secret.key in
        /// the site's folder). Or leave it out and set MANTISSA_MAIL_PASSWORD
        #[arg(long)]
        password_stdin: bool,
        /// How long mail is retried after temporary failures before it is
        /// given up (like 5d, the default, or 12h)
        #[arg(long, value_name = "DURATION")]
        retry_for: Option<String>,
        /// The wait before the first retry (like 1m, the default); each
        /// later wait doubles, up to an hour
        #[arg(long, value_name = "DURATION")]
        first_retry: Option<String>,
    },
    /// Print what the bounce parser makes of one message, as JSON: bounce,
    /// complaint, auto-reply or none; each failing address, permanent or
    /// temporary, its status code and reason (needs no site)
    Bounce {
        /// The message, as a file (.eml, one message; - for standard input)
        #[arg(value_name = "FILE.eml")]
        file: PathBuf,
        /// Act on it (needs the site): a bounce or complaint that came
        /// back to one of the site's return paths marks its address failing
        /// or counts it, and mail to a failing address is not sent. For a
        /// mail server that pipes the return paths' mail (bounces+…@) here
        #[arg(long)]
        apply: bool,
        /// The return path it was delivered to (the envelope recipient),
        /// when the mail server knows it; else the message's headers say
        #[arg(long, value_name = "ADDRESS", requires = "apply")]
        to: Option<String>,
    },
    /// DKIM signing of the site's mail: make a key and print the DNS
    /// record to publish, or show the records of the keys the site has
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// The DMARC aggregate reports received about the site's domain (how
    /// much mail claiming to be from it passed, and where what failed came
    /// from), and the DMARC record that asks for them
    Dmarc {
        /// Print the reports as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the outbound queue (messages waiting, being sent or failed,
    /// with their attempts, next try and last error), or retry or drop
    /// queued messages
    Queue {
        #[command(subcommand)]
        action: Option<QueueCommand>,
        /// List the delivered messages too
        #[arg(long)]
        all: bool,
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Make a signing key for the sender's domain and print the DNS TXT
    /// record to publish; mail from that domain is signed from then on
    Generate {
        /// The domain to sign for (default: the domain of the sender
        /// address, `mail set --from`)
        #[arg(long)]
        domain: Option<String>,
        /// The selector, the DNS name's first label (default: m and the
        /// year and month, like m202612)
        #[arg(long)]
        selector: Option<String>,
        /// Replace the domain's key if it has one (publish the new record
        /// first: mail signed with the old key may still be on its way)
        #[arg(long)]
        replace: bool,
    },
    /// Print the DNS records of the site's keys
    Show,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Try a queued or failed message again now (or every one, with --all)
    Retry {
        /// The message's id (from `mantissa mail queue`)
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Every queued and failed message
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Take a message out of the queue (it is not sent)
    Drop {
        /// The message's id (from `mantissa mail queue`)
        id: i64,
    },
}

#[derive(Subcommand)]
enum SignupCommand {
    /// Choose the mechanism: open, invitation, approval or closed
    Set {
        /// open, invitation, approval or closed
        mechanism: String,
    },
    /// Print a one-time invitation link
    Invite,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Show the settings
    Show,
    /// Change one: name, tagline, contact, theme, robots (text or @FILE),
    /// crawl-delay, hsts-max-age (seconds; 0 for none), trusted-proxies or
    /// metrics-from (addresses or CIDR blocks, comma-separated; "" for none)
    Set {
        /// The setting
        key: String,
        /// Its new value ("" clears contact and theme)
        value: String,
    },
}

#[derive(Subcommand)]
enum PortCommand {
    /// Add a port: `port add http 0.0.0.0:80`, `port add https 0.0.0.0:443 --cert C --key K`
    Add {
        /// http or https
        protocol: String,
        /// IP:PORT to listen on
        address: String,
        /// PEM certificate chain (https)
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// PEM private key (https)
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// List the ports
    List,
    /// Remove a port
    Remove {
        /// http or https
        protocol: String,
        /// IP:PORT
        address: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Size, items per type, files and scheduled entries of every store
    Stats {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run the integrity check of every store; exit 1 if any has problems
    Check,
    /// Finish every schema upgrade still running in the background, with progress
    Upgrade,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (and its store); without a password, print a
    /// one-time link for setting one
    Add {
        /// The user name
        #[arg(value_parser = store_name)]
        name: String,
        /// The account's email address
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (one line)
        #[arg(long)]
        password_stdin: bool,
        /// Make the account an administrator
        #[arg(long)]
        admin: bool,
    },
    /// List the accounts: user name, status, role, email addresses, created
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one account: status, addresses, password, two-factor log-in,
    /// passkeys, API tokens, sessions, and its store
    Show {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
    },
    /// Approve an account waiting for an administrator (sign-up by approval)
    Approve {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
    },
    /// Suspend an account: it cannot log in, its sessions end, and its API
    /// tokens are revoked
    Suspend {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
    },
    /// Let a suspended account log in again
    Unsuspend {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
    },
    /// Delete an account and its store, after exporting the store to the
    /// site's exports/ folder (`user import` brings it back)
    ///
    /// Asks first on a terminal; elsewhere, needs --yes.
    Delete {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
        /// Do not ask
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Set an account's password: typed at a prompt (twice, not shown), or
    /// one line of standard input when that is not a terminal
    ///
    /// Unlocks the account and ends its sessions and outstanding links; its
    /// API tokens and two-factor log-in stay. With --link, prints a
    /// one-time link for its owner to choose one instead.
    Passwd {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
        /// Print a one-time link (for 24 hours) for setting the password
        #[arg(long)]
        link: bool,
    },
    /// Write user NAME's store, attached files included, to the new FILE
    Export {
        /// The user
        #[arg(value_parser = store_name)]
        name: String,
        /// The file to write (must not exist)
        file: PathBuf,
    },
    /// Create user NAME's store from FILE, written by `user export`, and
    /// an account for it if there is none
    ///
    /// The new account has no password: a one-time link for setting one is
    /// printed. Refuses, creating nothing, if NAME has a store already or
    /// FILE is not an export.
    Import {
        /// The user (must not have a store yet)
        #[arg(value_parser = store_name)]
        name: String,
        /// The file written by `mantissa user export`
        file: PathBuf,
        /// The new account's email address
        #[arg(long)]
        email: Option<String>,
    },
}

/// What `mantissa generate` adds.
#[derive(Clone, Copy, clap::ValueEnum)]
enum GeneratePiece {
    Offering,
    Item,
    Page,
}

/// Refuses a bad user name while parsing, so it is a usage error (exit 2).
fn store_name(s: &str) -> Result<String, String> {
    mantissa_store::check_store_name(s)
        .map(|()| s.to_string())
        .map_err(|e| match e {
            mantissa_store::StoreError::BadName { reason, .. } => {
                format!("{s:?} cannot be a user name: {reason}")
            }
            e => e.to_string(),
        })
}

/// Runs the `mantissa` command line, serving `offerings` next to Mantissa's
/// own (the account settings), and returns the exit code: 0 done, 1 failed
/// (the error printed to stderr as a chain of causes), 2 bad usage (clap's
/// own). An application's binary is this one call:
///
/// ```no_run
/// use std::process::ExitCode;
/// use std::sync::Arc;
///
/// struct Blog;
/// impl mantissa::web::Offering for Blog {
///     fn name(&self) -> &'static str {
///         "blog"
///     }
/// }
///
/// fn main() -> ExitCode {
///     mantissa::cli::main_with(vec![Arc::new(Blog)])
/// }
/// ```
///
/// Every command works as in `mantissa` itself; `serve` also serves the
/// offerings (pages under `/private/<name>`, templates, static files, shared
/// items, the admin console's list), and accounts made by `serve` or
/// `user add` get them installed as the site's products say.
pub fn main_with(offerings: Vec<Arc<dyn Offering>>) -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args, &offerings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "error: {e}");
            for cause in e.chain().skip(1) {
                let _ = writeln!(err, "  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A site's address: `http://` or `https://`, a host, an optional port,
/// nothing after it but `/`.
fn site_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} does not start with http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let host = authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            authority
        }
    });
    let plain = |c: char| c.is_ascii_alphanumeric() || "-.[]:".contains(c);
    if host.is_empty() || !authority.chars().all(plain) {
        return Err(format!(
            "{text:?} is not a site's address: write the scheme, host and port only, like https://example.org or http://localhost:8080"
        ));
    }
    Ok(text.to_string())
}

fn run(args: Args, offerings: &[Arc<dyn Offering>]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let out: &mut dyn Write = &mut out;
    match args.command {
        Command::Init { dir: Some(dir) } => cli::init(
            &cli::SiteDir {
                dir,
                chosen: cli::Chosen::Given,
            },
            out,
        )?,
        Command::Init { dir: None } => cli::init(&cli::SiteDir::find(args.site)?, out)?,
        Command::New { dir, mantissa } => cli::new_site(&dir, mantissa.as_deref(), out)?,
        Command::Generate {
            piece,
            name,
            offering,
        } => {
            let piece = match piece {
                GeneratePiece::Offering => cli::Piece::Offering,
                GeneratePiece::Item => cli::Piece::Item,
                GeneratePiece::Page => cli::Piece::Page,
            };
            cli::generate(Path::new("."), piece, &name, offering.as_deref(), out)?
        }
        Command::Dev { serve_args } => cli::dev(Path::new("."), &serve_args, out)?,
        Command::Mail(MailCommand::Bounce {
            file, apply: false, ..
        }) => cli::mail_bounce(&file, out)?,
        Command::Migrate { to, from, replace } => {
            let dir = cli::SiteDir::find(args.site)?.dir;
            cli::migrate(&dir, to.as_deref(), from.as_deref(), replace, out)?
        }
        Command::Serve { listen, dev, url } => {
            let options = cli::ServeOptions {
                listen,
                dev,
                url,
                store: args.store.clone(),
            };
            cli::serve_with(&cli::SiteDir::find(args.site)?, options, offerings, out)?
        }
        command => {
            let site =
                cli::open_site_at(&cli::SiteDir::find(args.site)?.dir, args.store.as_deref())?;
            match command {
                Command::Store(StoreCommand::Stats { json }) => cli::store_stats(&site, json, out)?,
                Command::Store(StoreCommand::Check) => cli::store_check(&site, out)?,
                Command::Store(StoreCommand::Upgrade) => cli::store_upgrade(&site, out)?,
                Command::Site(SiteCommand::Show) => cli::site_show(&site, out)?,
                Command::Signup(SignupCommand::Set { mechanism }) => {
                    cli::signup_set(&site, &mechanism, out)?
                }
                Command::Signup(SignupCommand::Invite) => cli::signup_invite(&site, out)?,
                Command::Mail(MailCommand::Dkim(DkimCommand::Generate {
                    domain,
                    selector,
                    replace,
                })) => cli::mail_dkim_generate(
                    &site,
                    domain.as_deref(),
                    selector.as_deref(),
                    replace,
                    out,
                )?,
                Command::Mail(MailCommand::Dkim(DkimCommand::Show)) => {
                    cli::mail_dkim_show(&site, out)?
                }
                Command::Mail(MailCommand::Dmarc { json }) => cli::mail_dmarc(&site, json, out)?,
                Command::Mail(MailCommand::Queue { action, all, json }) => match action {
                    None => cli::mail_queue(&site, all, json, out)?,
                    Some(QueueCommand::Retry { id, .. }) => cli::mail_queue_retry(&site, id, out)?,
                    Some(QueueCommand::Drop { id }) => cli::mail_queue_drop(&site, id, out)?,
                },
                Command::Mail(MailCommand::Set {
                    from,
                    relay,
                    tls,
                    user,
                    password_stdin,
                    retry_for,
                    first_retry,
                }) => {
                    let password = password_stdin.then(read_password).transpose()?;
                    let settings = cli::MailSettings {
                        from,
                        relay,
                        tls,
                        user,
                        password,
                        retry_for,
                        first_retry,
                    };
                    cli::mail_set(&site, settings, out)?
                }
                Command::User(UserCommand::Add {
                    name,
                    email,
                    password_stdin,
                    admin,
                }) => {
                    let password = password_stdin.then(read_password).transpose()?;
                    cli::user_add_with(
                        &site,
                        offerings,
                        &name,
                        email.as_deref(),
                        password.as_deref(),
                        admin,
                        out,
                    )?
                }
                Command::Site(SiteCommand::Set { key, value }) => {
                    cli::site_set(&site, &key, &value, out)?
                }
                Command::Backup { dest } => cli::backup(&site, &dest, out)?,
                Command::User(UserCommand::Export { name, file }) => {
                    cli::user_export(&site, &name, &file, out)?
                }
                Command::User(UserCommand::Import { name, file, email }) => {
                    cli::user_import(&site, &name, &file, email.as_deref(), out)?
                }
                Command::User(UserCommand::List { json }) => cli::user_list(&site, json, out)?,
                Command::User(UserCommand::Show { name }) => cli::user_show(&site, &name, out)?,
                Command::User(UserCommand::Approve { name }) => {
                    cli::user_approve(&site, &name, out)?
                }
                Command::User(UserCommand::Suspend { name }) => {
                    cli::user_suspend(&site, &name, out)?
                }
                Command::User(UserCommand::Unsuspend { name }) => {
                    cli::user_unsuspend(&site, &name, out)?
                }
                Command::User(UserCommand::Delete { name, yes }) => {
                    // Nothing is asked about an account there is not.
                    cli::user_exists(&site, &name)?;
                    if !yes {
                        confirm_delete(&name)?;
                    }
                    cli::user_delete(&site, &name, out)?
                }
                Command::User(UserCommand::Passwd { name, link: true }) => {
                    cli::user_password_link(&site, &name, out)?
                }
                Command::User(UserCommand::Passwd { name, link: false }) => {
                    cli::user_exists(&site, &name)?;
                    let password = new_password(&name)?;
                    cli::user_passwd(&site, &name, &password, out)?
                }
                Command::Port(PortCommand::Add {
                    protocol,
                    address,
                    cert,
                    key,
                }) => {
                    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
                    let port = Port {
                        protocol,
                        address,
                        cert: cert.map(|c| absolute(c).display().to_string()),
                        key: key.map(|k| absolute(k).display().to_string()),
                    };
                    cli::port_add(&site, port, out)?
                }
                Command::Port(PortCommand::List) => cli::port_list(&site, out)?,
                Command::Port(PortCommand::Remove { protocol, address }) => {
                    cli::port_remove(&site, &protocol, &address, out)?
                }
                Command::Init { .. }
                | Command::Serve { .. }
                | Command::Migrate { .. }
                | Command::New { .. }
                | Command::Generate { .. }
                | Command::Dev { .. }
                | Command::Mail(MailCommand::Bounce { apply: false, .. }) => {
                    unreachable!("handled above")
                }
                Command::Mail(MailCommand::Bounce { file, to, .. }) => {
                    cli::mail_bounce_apply(&site, &file, to.as_deref(), out)?
                }
            }
        }
    }
    Ok(())
}

/// Asks on the terminal whether to delete `name`: the user name typed
/// back. Refuses when standard input is not a terminal (add --yes).
fn confirm_delete(name: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !io::stdin().is_terminal() {
        anyhow::bail!(
            "not deleted: to delete {name} without being asked (standard input is not a terminal), add --yes"
        );
    }
    eprint!(
        "Delete the account {name} and its store (exported first to the site's exports/ folder)?\nType its user name to confirm: "
    );
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    if answer.trim() != name {
        anyhow::bail!("not deleted: the name typed was not {name:?}");
    }
    Ok(())
}

/// The new password for `name`: typed twice at a prompt that does not show
/// it, on a terminal; else one line of standard input.
fn new_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if !io::stdin().is_terminal() {
        return Ok(read_password()?);
    }
    let first = rpassword::prompt_password(format!("New password for {name}: "))?;
    let again = rpassword::prompt_password("The same again: ")?;
    if first != again {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// One line of standard input, without its line ending.
fn read_password() -> io::Result<String> {
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Logs to stderr, filtered by MANTISSA_LOG (default: warnings and errors).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MANTISSA_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // An application that set up its own logging keeps it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Output cut short by a closed pipe (`mantissa store stats | head`) is not
/// a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
