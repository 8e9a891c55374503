//! The durability promise, tested by killing the process rather than
//! assumed: a write that returned success survives `kill -9`.
//!
//! This test target has no libtest harness (`harness = false`): its `main`
//! is the parent, which runs the same executable again as a child. The
//! child opens a site and writes as fast as it can, one thread per store
//! (the site store and four user stores), mixing single inserts,
//! transactions of three items and items with an attached file — two of
//! the user stores with awaited writes (`write(..).await`, committed by the
//! write pool), the others with `write_blocking`; after each write returns
//! `Ok` it prints `ack STORE SEQ` and flushes. The
//! parent kills the child with SIGKILL after a random 5–150 ms, then opens
//! the site itself and checks that:
//!
//! - every acknowledged write is there, with its payload and its file;
//! - no transaction is there in part (three items, or none);
//! - `Store::check` finds no problem in any store.
//!
//! Then the next round starts a new child on the same site, continuing the
//! sequence numbers, so later rounds also check that earlier writes outlive
//! later crashes. The last line is `crash: 1 passed, 0 failed`, or
//! `crash: 0 passed, 1 failed` after a description of what was lost.
//!
//! Run it alone with `cargo test -p mantissa-store --test crash`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mantissa_store::{Item, Site, Store, StoreError};

/// Rounds of spawn, kill, verify.
const ROUNDS: u32 = 25;
/// The whole test stops starting rounds after this long.
const TIME_BUDGET: Duration = Duration::from_secs(40);
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// The user stores written to, besides the site store.
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
/// The environment variable that makes this executable a child, naming the
/// site folder.
const CHILD_SITE: &str = "MANTISSA_CRASH_CHILD_SITE";
/// The child's first sequence number.
const CHILD_SEQ: &str = "MANTISSA_CRASH_CHILD_SEQ";
const TEST_NAME: &str = "crash";

/// One written item. A transaction of several items gives them one `seq`
/// and parts 0, 1, 2.
#[derive(Item, Debug)]
#[item(name = "crash.entry", version = 1)]
struct Entry {
    #[item(index)]
    seq: i64,
    part: i64,
    payload: String,
}

/// What kind of write a sequence number is; every store gets every kind.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// One insert.
    Single,
    /// A transaction inserting three items.
    Multi,
    /// An insert and a file attached to it, in one transaction.
    File,
}

const PARTS: i64 = 3;
const FILE_NAME: &str = "payload.bin";

fn kind(seq: i64) -> Kind {
    match (seq / 5) % 3 {
        0 => Kind::Single,
        1 => Kind::Multi,
        _ => Kind::File,
    }
}

/// The store a sequence number is written to: 0 the site store, 1–4 users.
fn store_index(seq: i64) -> usize {
    (seq % 5) as usize
}

fn store_name(index: usize) -> &'static str {
    if index == 0 { "site" } else { USERS[index - 1] }
}

/// A payload of 16 to 3015 bytes that says whose it is.
fn payload(seq: i64, part: i64) -> String {
    let len = ((seq * 7919 + part * 104_729) % 3000 + 16) as usize;
    let unit = format!("{seq}.{part};");
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

/// A file of 1 to 20,000 bytes, different for each `seq`.
fn file_bytes(seq: i64) -> Vec<u8> {
    let len = (seq * 104_729 % 20_000 + 1) as usize;
    (0..len as i64).map(|i| (i * 31 + seq) as u8).collect()
}

fn entry(seq: i64, part: i64) -> Entry {
    Entry {
        seq,
        part,
        payload: payload(seq, part),
    }
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(CHILD_SITE) {
        let start = std::env::var(CHILD_SEQ)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return child(Path::new(&dir), start);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // What libtest prints, for runners that list tests first.
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    if !selected(&args) {
        println!("{TEST_NAME}: 0 passed, 0 failed, 1 skipped");
        return ExitCode::SUCCESS;
    }
    parent()
}

/// Whether libtest-style filters in `args` select this test.
fn selected(args: &[String]) -> bool {
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |f: &str| {
        if exact {
            f == TEST_NAME
        } else {
            TEST_NAME.contains(f)
        }
    };
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => {
                if it.next().is_some_and(|f| matches(f)) {
                    return false;
                }
            }
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a),
        }
    }
    filters.is_empty() || filters.iter().any(|f| matches(f))
}

// --- the child -------------------------------------------------------------

fn child(dir: &Path, start: i64) -> ExitCode {
    let stores = match open_stores(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crash child: cannot open the site: {e}");
            return ExitCode::FAILURE;
        }
    };
    if say("ready").is_err() {
        return ExitCode::FAILURE;
    }
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| std::thread::spawn(move || write_forever(i, &store, start)))
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("crash child: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The site store, then the user stores, in [`store_index`] order.
fn open_stores(dir: &Path) -> Result<Vec<Store>, StoreError> {
    let site = Site::open(dir)?;
    let mut stores = vec![site.store().clone()];
    for u in USERS {
        stores.push(site.user_store(u)?);
    }
    Ok(stores)
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// One write of [`write_forever`], blocking or awaited.
type WriteFn = Box<dyn FnOnce(&mut mantissa_store::Write<'_>) -> Result<(), StoreError> + Send>;

/// Writes every `seq >= start` that belongs to store `index`, acknowledging
/// each once it is committed, until killed (or the parent is gone).
fn write_forever(index: usize, store: &Store, start: i64) -> Result<(), String> {
    // Two of the user stores are written with awaited writes, which the
    // write pool commits; the others with blocking writes, on this thread.
    let rt = (index % 2 == 1).then(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    });
    let commit = |f: WriteFn| match &rt {
        Some(rt) => rt.block_on(store.write(f)),
        None => store.write_blocking(f),
    };
    let began = Instant::now();
    let mut seq = start + (index as i64 - start % 5).rem_euclid(5);
    while began.elapsed() < CHILD_LIFETIME {
        debug_assert_eq!(store_index(seq), index);
        let written = match kind(seq) {
            Kind::Single => commit(Box::new(move |tx| tx.insert(&entry(seq, 0)).map(drop))),
            Kind::Multi => commit(Box::new(move |tx| {
                for part in 0..PARTS {
                    tx.insert(&entry(seq, part))?;
                }
                Ok(())
            })),
            Kind::File => commit(Box::new(move |tx| {
                let id = tx.insert(&entry(seq, 0))?;
                tx.attach_file(id, FILE_NAME, &file_bytes(seq))
            })),
        };
        written.map_err(|e| format!("writing seq {seq} to {}: {e}", store_name(index)))?;
        if say(&format!("ack {} {seq}", store_name(index))).is_err() {
            // The parent is gone.
            return Ok(());
        }
        seq += 5;
    }
    Ok(())
}

// --- the parent ------------------------------------------------------------

/// What one child acknowledged before it was killed.
struct Round {
    acks: Vec<i64>,
    ready: bool,
}

fn parent() -> ExitCode {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = tmp.path().join("site");
    let exe = std::env::current_exe().expect("this test's executable");
    // Every acknowledged seq, ever.
    let mut acked = BTreeSet::new();
    let mut failures = Vec::new();
    let mut next_seq = 0;
    let mut rounds = 0;
    let mut killed_before_any_ack = 0;
    for round in 0..ROUNDS {
        if started.elapsed() > TIME_BUDGET {
            println!("crash: time budget spent after {round} rounds");
            break;
        }
        rounds += 1;
        let result = match run_child(&exe, &dir, next_seq, round) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("round {round}: {e}"));
                break;
            }
        };
        if result.acks.is_empty() {
            killed_before_any_ack += 1;
        }
        if !result.ready && !result.acks.is_empty() {
            failures.push(format!("round {round}: acknowledgements before \"ready\""));
        }
        acked.extend(result.acks.iter().copied());
        match verify(&dir, &acked) {
            Ok(highest) => {
                next_seq = highest.max(acked.last().copied().unwrap_or(-1)) + 1;
            }
            Err(mut lost) => {
                for l in &mut lost {
                    *l = format!("round {round}, after killing the writer: {l}");
                }
                failures.extend(lost);
                break;
            }
        }
    }
    if failures.is_empty() && acked.is_empty() {
        failures.push(
            "no write was acknowledged in any round, so nothing was tested; is the machine \
             too slow for the kill delays?"
                .into(),
        );
    }
    let by_kind = |k| acked.iter().filter(|&&s| kind(s) == k).count();
    println!(
        "crash: {rounds} rounds killed with SIGKILL ({killed_before_any_ack} before any \
         acknowledgement); {} acknowledged writes checked ({} single, {} three-item \
         transactions, {} with a file) in {:.1} s",
        acked.len(),
        by_kind(Kind::Single),
        by_kind(Kind::Multi),
        by_kind(Kind::File),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        println!("{TEST_NAME}: 1 passed, 0 failed");
        ExitCode::SUCCESS
    } else {
        println!(
            "crash: a write that returned success did not survive kill -9, or a store was damaged:"
        );
        for f in failures.iter().take(30) {
            println!("  {f}");
        }
        if failures.len() > 30 {
            println!("  ... and {} more", failures.len() - 30);
        }
        println!("{TEST_NAME}: 0 passed, 1 failed");
        ExitCode::FAILURE
    }
}

/// Starts a child writing from `start`, kills it after a random delay, and
/// returns what it acknowledged. Most rounds count the delay from the
/// child's "ready" (so the kill lands among writes); every fifth counts it
/// from the start of the process (so it may land while the stores open).
fn run_child(exe: &Path, dir: &Path, start: i64, round: u32) -> Result<Round, String> {
    let mut child = Command::new(exe)
        .env(CHILD_SITE, dir)
        .env(CHILD_SEQ, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let delay = Duration::from_millis(fastrand::u64(5..=150));
    let mut seen = Vec::new();
    if round % 5 != 4 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line == "ready";
                    seen.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("the child did not open the site within 20 s".into());
                }
            }
        }
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the child: {e}"))?;
    reader.join().expect("reader thread");
    seen.extend(lines.try_iter());
    if status.signal() != Some(9) {
        return Err(format!(
            "the child ended by itself ({status}) instead of being killed; see its stderr above"
        ));
    }

    let mut round = Round {
        acks: Vec::new(),
        ready: false,
    };
    for line in seen {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("ready"), None, None) => round.ready = true,
            (Some("ack"), Some(store), Some(seq)) => {
                let seq: i64 = seq
                    .parse()
                    .map_err(|_| format!("unreadable acknowledgement {line:?}"))?;
                if store != store_name(store_index(seq)) {
                    return Err(format!(
                        "seq {seq} acknowledged by the wrong store: {line:?}"
                    ));
                }
                round.acks.push(seq);
            }
            _ => return Err(format!("unexpected line from the child: {line:?}")),
        }
    }
    Ok(round)
}

/// Opens the site after a crash and checks every store; returns the highest
/// seq stored, or a description of everything wrong.
fn verify(dir: &Path, acked: &BTreeSet<i64>) -> Result<i64, Vec<String>> {
    let site =
        Site::open_existing(dir).map_err(|e| vec![format!("cannot reopen the site: {e}")])?;
    let mut problems = Vec::new();
    let mut highest = -1;
    for index in 0..=USERS.len() {
        let name = store_name(index);
        let store = if index == 0 {
            Some(site.store().clone())
        } else {
            match site.existing_user_store(name) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("store {name} does not open: {e}"));
                    continue;
                }
            }
        };
        let mine = acked.iter().filter(|&&s| store_index(s) == index);
        let Some(store) = store else {
            if let Some(seq) = mine.clone().next() {
                problems.push(format!(
                    "store {name} is gone, with acknowledged seq {seq} and {} more",
                    mine.count() - 1
                ));
            }
            continue;
        };
        match store.check() {
            Ok(found) => problems.extend(found.into_iter().map(|p| format!("store {name}: {p}"))),
            Err(e) => problems.push(format!("store {name}: the check failed: {e}")),
        }
        match check_store(&store, index) {
            Ok((present, top)) => {
                highest = highest.max(top);
                for &seq in mine {
                    if !present.contains(&seq) {
                        problems.push(format!(
                            "store {name} lost acknowledged seq {seq} ({:?} write)",
                            kind(seq)
                        ));
                    }
                }
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(highest)
    } else {
        Err(problems)
    }
}

/// Reads every entry of one store and checks it whole: right store, whole
/// transactions, payloads and files intact. Returns the seqs present and
/// the highest one.
fn check_store(store: &Store, index: usize) -> Result<(BTreeSet<i64>, i64), Vec<String>> {
    let name = store_name(index);
    store
        .read_blocking(|r| -> mantissa_store::Result<_> {
            let mut problems = Vec::new();
            let mut parts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for e in r.query::<Entry>().all()? {
                let seq = e.seq;
                parts.entry(seq).or_default().push(e.part);
                if store_index(seq) != index {
                    problems.push(format!("store {name} holds seq {seq}, which is not its own"));
                }
                if e.payload != payload(seq, e.part) {
                    problems.push(format!(
                        "store {name}: seq {seq} part {} has a damaged payload ({} bytes)",
                        e.part,
                        e.payload.len()
                    ));
                }
                if kind(seq) == Kind::File {
                    match r.file(e.id(), FILE_NAME)? {
                        Some(bytes) if bytes == file_bytes(seq) => {}
                        Some(bytes) => problems.push(format!(
                            "store {name}: the file of seq {seq} is damaged ({} bytes, {} expected)",
                            bytes.len(),
                            file_bytes(seq).len()
                        )),
                        None => problems.push(format!(
                            "store {name}: seq {seq} was committed without its file"
                        )),
                    }
                }
            }
            for (seq, mut got) in parts.iter_mut().map(|(s, p)| (*s, p.clone())) {
                got.sort();
                let want: Vec<i64> = match kind(seq) {
                    Kind::Multi => (0..PARTS).collect(),
                    _ => vec![0],
                };
                if got != want {
                    problems.push(format!(
                        "store {name}: seq {seq} ({:?}) has parts {got:?}, not {want:?}: a transaction was kept in part",
                        kind(seq)
                    ));
                }
            }
            let top = parts.keys().last().copied().unwrap_or(-1);
            Ok((problems, parts.into_keys().collect::<BTreeSet<_>>(), top))
        })
        .map_err(|e| vec![format!("store {name}: cannot read its entries: {e}")])
        .and_then(|(problems, present, top)| {
            if problems.is_empty() {
                Ok((present, top))
            } else {
                Err(problems)
            }
        })
}
