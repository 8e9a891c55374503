//! Powerups, the scheduler, the work queue and interstore messages, used as
//! offerings use them, across restarts of the site.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mantissa_store::*;
use serde::{Deserialize, Serialize};

mod refused;
use refused::Refused;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- powerups ----

/// A navigation tab an offering contributes.
pub trait Tab: Send {
    /// What the tab shows.
    fn label(&self) -> String;
}
impl Interface for dyn Tab {
    const NAME: &'static str = "t.svc.tab";
}

#[derive(Item)]
#[item(name = "t.svc.inbox_tab", version = 1)]
struct InboxTab {
    unread: i64,
}
impl Tab for InboxTab {
    fn label(&self) -> String {
        format!("Inbox ({})", self.unread)
    }
}
powerup!(InboxTab as dyn Tab);

#[derive(Item)]
#[item(name = "t.svc.blog_tab", version = 1)]
struct BlogTab {
    title: String,
}
impl Tab for BlogTab {
    fn label(&self) -> String {
        self.title.clone()
    }
}
powerup!(BlogTab as dyn Tab);

#[derive(Item)]
#[item(name = "t.svc.folder", version = 1)]
struct Folder {
    name: String,
}

fn labels(s: &Store) -> Vec<String> {
    s.read_blocking(|r| -> Result<_> {
        Ok(r.powerups::<dyn Tab>()?.iter().map(|t| t.label()).collect())
    })
    .unwrap()
}

#[test]
fn powerups_come_back_as_trait_objects_in_priority_order() {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    let s = site.user_store("alice").unwrap();
    let (blog, folder) = s
        .write_blocking(|tx| -> Result<_> {
            let inbox = tx.insert(&InboxTab { unread: 3 })?;
            let blog = tx.insert(&BlogTab {
                title: "Blog".into(),
            })?;
            tx.install_powerup::<dyn Tab, _>(inbox, 10)?;
            tx.install_powerup::<dyn Tab, _>(blog, 20)?;
            let folder = tx.insert(&Folder {
                name: "Work".into(),
            })?;
            let special = tx.insert(&BlogTab {
                title: "Work notes".into(),
            })?;
            tx.install_powerup_on::<dyn Tab, _, _>(folder, special, 0)?;
            Ok((blog, folder))
        })
        .unwrap();
    assert_eq!(labels(&s), ["Blog", "Inbox (3)"]);
    let on_folder = s
        .read_blocking(move |r| -> Result<_> {
            Ok(r.powerups_on::<dyn Tab, _>(folder)?
                .iter()
                .map(|t| t.label())
                .collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(on_folder, ["Work notes"]);

    // Reinstalling changes the priority; deleting the item uninstalls it.
    s.write_blocking(move |tx| tx.install_powerup::<dyn Tab, _>(blog, 1))
        .unwrap();
    assert_eq!(labels(&s), ["Inbox (3)", "Blog"]);
    s.write_blocking(move |tx| tx.delete(blog)).unwrap();
    assert_eq!(labels(&s), ["Inbox (3)"]);
    s.write_blocking(move |tx| tx.delete(folder)).unwrap();
    let left = s
        .read_blocking(move |r| -> Result<_> { Ok(r.powerups_on::<dyn Tab, _>(folder)?.len()) })
        .unwrap();
    assert_eq!(left, 0);
}

// ---- scheduler ----

#[derive(Item)]
#[item(name = "t.svc.job", version = 1)]
struct Job {
    runs: i64,
    /// Fail this many times before succeeding.
    fail_first: i64,
    /// Run again this many more times, a minute apart.
    repeat: i64,
}

impl Scheduled for Job {
    type Error = Refused;
    fn run(
        mut me: Stored<Self>,
        tx: &mut Write<'_>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, Refused> {
        me.runs += 1;
        tx.update(&me)?;
        if me.fail_first > 0 {
            return Err(Refused::Because("not yet"));
        }
        if me.repeat > 0 {
            me.repeat -= 1;
            tx.update(&me)?;
            return Ok(Some(now.plus(secs(60))));
        }
        Ok(None)
    }
}
scheduled!(Job);

#[test]
fn scheduled_work_survives_restarts_and_runs_once_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::now();
    let job = {
        let site = mantissa_store::testing::open_site(dir.path()).unwrap();
        let s = site.user_store("bob").unwrap();
        s.write_blocking(move |tx| -> Result<_> {
            let j = tx.insert(&Job {
                runs: 0,
                fail_first: 0,
                repeat: 2,
            })?;
            tx.schedule(j, t0.plus(secs(30)))?;
            Ok(j)
        })
        .unwrap()
    };
    // A new process: the site finds bob's due work without being told.
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    assert_eq!(site.run_due(t0).unwrap().scheduled, 0, "not due yet");
    let r = site.run_due(t0.plus(secs(31))).unwrap();
    assert_eq!(r.scheduled, 1);
    assert_eq!(
        site.run_due(t0.plus(secs(32))).unwrap().scheduled,
        0,
        "runs once"
    );
    let bob = site.user_store("bob").unwrap();
    let next = bob.read_blocking(move |r| r.scheduled_at(job)).unwrap();
    assert_eq!(
        next,
        Some(t0.plus(secs(91))),
        "recurring work returned its next time"
    );
    site.run_due(t0.plus(secs(100))).unwrap();
    site.run_due(t0.plus(secs(200))).unwrap();
    let (runs, next) = bob
        .read_blocking(move |r| -> Result<_> { Ok((r.get(job)?.runs, r.scheduled_at(job)?)) })
        .unwrap();
    assert_eq!(runs, 3);
    assert_eq!(next, None, "done after its last run");
    assert_eq!(bob.next_due().unwrap(), None);
}

#[test]
fn failing_runs_are_recorded_and_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    let s = site.store().clone();
    let t0 = Timestamp::now();
    let job = s
        .write_blocking(move |tx| -> Result<_> {
            let j = tx.insert(&Job {
                runs: 0,
                fail_first: 1,
                repeat: 0,
            })?;
            tx.schedule(j, t0)?;
            Ok(j)
        })
        .unwrap();
    site.run_due(t0).unwrap();
    let entry = s.read_blocking(|r| r.schedule()).unwrap().remove(0);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.last_error.as_deref(), Some("not yet"));
    assert_eq!(entry.due, t0.plus(secs(2)), "backs off");
    let runs = s
        .read_blocking(move |r| -> Result<_> { Ok(r.get(job)?.runs) })
        .unwrap();
    assert_eq!(runs, 0, "what the failed run wrote was undone");
    // Not retried before the backoff ends.
    assert_eq!(site.run_due(t0.plus(secs(1))).unwrap().scheduled, 0);
    s.write_blocking(move |tx| {
        let mut j = tx.get(job)?;
        j.fail_first = 0;
        tx.update(&j)
    })
    .unwrap();
    assert_eq!(site.run_due(t0.plus(secs(2))).unwrap().scheduled, 1);
    let (runs, left) = s
        .read_blocking(move |r| -> Result<_> { Ok((r.get(job)?.runs, r.schedule()?.len())) })
        .unwrap();
    assert_eq!((runs, left), (1, 0));
}

// ---- work queue ----

#[derive(Item)]
#[item(name = "t.svc.mail", version = 1)]
struct Mail {
    subject: String,
}

#[derive(Item)]
#[item(name = "t.svc.index_entry", version = 1)]
struct IndexEntry {
    #[item(on_delete = "cascade")]
    mail: Ref<Mail>,
    word: String,
}

static EXTERNAL_CALLS: AtomicUsize = AtomicUsize::new(0);

struct Indexer;
impl Listener for Indexer {
    type Item = Mail;
    const NAME: &'static str = "t.svc.indexer";
    type Error = Refused;
    fn process(mail: Stored<Mail>, tx: &mut Write<'_>) -> Result<(), Refused> {
        EXTERNAL_CALLS.fetch_add(1, Ordering::SeqCst);
        if mail.subject.contains("poison") {
            return Err(Refused::Because("cannot index this"));
        }
        for word in mail.subject.split_whitespace() {
            tx.insert(&IndexEntry {
                mail: mail.id(),
                word: word.to_lowercase(),
            })?;
        }
        Ok(())
    }
}
listener!(Indexer);

#[test]
fn listeners_see_each_new_item_once_in_order_and_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let site = mantissa_store::testing::open_site(dir.path()).unwrap();
        let s = site.user_store("carol").unwrap();
        s.write_blocking(|tx| {
            tx.insert(&Mail {
                subject: "Hello World".into(),
            })?;
            tx.insert(&Mail {
                subject: "poison pill".into(),
            })?;
            tx.insert(&Mail {
                subject: "After Poison".into(),
            })
            .map(drop)
        })
        .unwrap();
        let r = site.run_due(Timestamp::now()).unwrap();
        assert_eq!(r.processed, 1, "stops at the failing item, keeping order");
    }
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    let s = site.user_store("carol").unwrap();
    let words = |s: &Store| {
        s.read_blocking(|r| {
            r.query::<IndexEntry>()
                .order_by(IndexEntry::word.asc())
                .column(IndexEntry::word)
        })
        .unwrap()
    };
    assert_eq!(words(&s), ["hello", "world"]);
    // Fix the poison and let the retry come due: processing resumes there.
    s.write_blocking(|tx| {
        let mut m = tx
            .query::<Mail>()
            .filter(Mail::subject.eq("poison pill"))
            .first()?
            .unwrap();
        m.subject = "cured".into();
        tx.update(&m)
    })
    .unwrap();
    let r = site.run_due(Timestamp::now().plus(secs(3))).unwrap();
    assert_eq!(r.processed, 2);
    assert_eq!(words(&s), ["after", "cured", "hello", "poison", "world"]);
    assert_eq!(
        site.run_due(Timestamp::now().plus(secs(10)))
            .unwrap()
            .processed,
        0,
        "once each"
    );
}

// ---- interstore messages ----

#[derive(Serialize, Deserialize)]
struct ShareRequest {
    item: String,
}

#[derive(Item)]
#[item(name = "t.svc.shared_with_me", version = 1)]
struct SharedWithMe {
    from: String,
    item: String,
}

#[derive(Item)]
#[item(name = "t.svc.share_receipt", version = 1)]
struct ShareReceipt {
    accepted_as: i64,
}

impl Message for ShareRequest {
    const NAME: &'static str = "t.svc.share";
    type Answer = i64;
    type Error = StoreError;
    fn receive(self, tx: &mut Write<'_>, from: &str) -> Result<i64> {
        Ok(tx
            .insert(&SharedWithMe {
                from: from.into(),
                item: self.item,
            })?
            .id())
    }
    fn answered(tx: &mut Write<'_>, _id: MessageId, answer: i64) -> Result<()> {
        tx.insert(&ShareReceipt {
            accepted_as: answer,
        })
        .map(drop)
    }
}
message!(ShareRequest);

#[test]
fn messages_are_delivered_and_answered_exactly_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (id, lost) = {
        let site = mantissa_store::testing::open_site(dir.path()).unwrap();
        site.user_store("dan").unwrap();
        let erin = site.user_store("erin").unwrap();
        erin.write_blocking(|tx| -> Result<_> {
            let id = tx.send_message(
                "dan",
                &ShareRequest {
                    item: "photos".into(),
                },
            )?;
            let lost = tx.send_message("nobody", &ShareRequest { item: "x".into() })?;
            Ok((id, lost))
        })
        .unwrap()
    };
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    let r = site.run_due(Timestamp::now()).unwrap();
    assert_eq!(r.delivered, 1);
    // Running again delivers nothing twice.
    site.run_due(Timestamp::now().plus(secs(60))).unwrap();
    let dan = site.user_store("dan").unwrap();
    let erin = site.user_store("erin").unwrap();
    let received = dan
        .read_blocking(|r| r.query::<SharedWithMe>().all())
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].from.as_str(), received[0].item.as_str()),
        ("erin", "photos")
    );
    let (answer, receipts, lost_state) = erin
        .read_blocking(move |r| -> Result<_> {
            Ok((
                r.message_answer::<ShareRequest>(id)?,
                r.query::<ShareReceipt>()
                    .column(ShareReceipt::accepted_as)?,
                r.message_state(lost)?,
            ))
        })
        .unwrap();
    assert_eq!(answer, Some(received[0].id().id()));
    assert_eq!(receipts, [received[0].id().id()]);
    assert_eq!(
        lost_state,
        Some(MessageState::Failed("no store named \"nobody\"".into()))
    );
}

#[test]
fn a_delivery_interrupted_after_the_receiver_committed_is_not_received_twice() {
    // On SQLite: the crash is staged by editing the sender's file.
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    let dan = site.user_store("dan").unwrap();
    let erin = site.user_store("erin").unwrap();
    let id = erin
        .write_blocking(|tx| {
            tx.send_message(
                "dan",
                &ShareRequest {
                    item: "once".into(),
                },
            )
        })
        .unwrap();
    site.run_due(Timestamp::now()).unwrap();
    // Simulate a crash between the receiver's commit and the sender's: the
    // sender still thinks the message is pending.
    let path = erin.path().to_path_buf();
    drop(erin);
    drop(site);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE _outbox SET state = 'pending', answer = NULL WHERE id = ?",
        [id.0],
    )
    .unwrap();
    c.execute("DELETE FROM \"item_t.svc.share_receipt\"", [])
        .unwrap();
    drop(c);
    // The process died before telling the site the delivery was done, so
    // the site still lists erin as having work.
    let c = rusqlite::Connection::open(dir.path().join("site.sqlite")).unwrap();
    c.execute(
        "INSERT OR REPLACE INTO _due_stores (store, due) VALUES ('erin', 0)",
        [],
    )
    .unwrap();
    drop(c);

    let site = Site::open(dir.path()).unwrap();
    let erin = site.user_store("erin").unwrap();
    assert_eq!(site.run_due(Timestamp::now()).unwrap().delivered, 1);
    let items = dan
        .read_blocking(|r| r.query::<SharedWithMe>().column(SharedWithMe::item))
        .unwrap();
    assert_eq!(items, ["once"], "not received twice");
    let answer = erin
        .read_blocking(move |r| r.message_answer::<ShareRequest>(id))
        .unwrap();
    assert!(
        answer.is_some(),
        "the repeated delivery still brought the answer back"
    );
}
