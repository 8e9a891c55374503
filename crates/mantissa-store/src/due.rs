//! Running the work that stores have due: scheduled entries, listeners'
//! new items, and messages to deliver — for the site store and for every user
//! store that has told the site it has work, without opening the others.

use std::time::Duration;

use crate::error::Result;
use crate::message::SITE_STORE;
use crate::site::Site;
use crate::store::Store;
use crate::value::{Timestamp, Value};

/// What one [`Site::run_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DueReport {
    /// Stores visited.
    pub stores: usize,
    /// Scheduled entries run.
    pub scheduled: usize,
    /// Items processed by listeners.
    pub processed: usize,
    /// Messages delivered and answered.
    pub delivered: usize,
}

impl Site {
    /// Runs everything due at `now` in the site store and in every user
    /// store with due work. Blocking; the server runs it on a timer (see
    /// [`Site::spawn_background`]).
    pub fn run_due(&self, now: Timestamp) -> Result<DueReport> {
        let mut report = DueReport::default();
        self.run_store(self.store(), SITE_STORE, now, &mut report)?;
        let due: Vec<String> = self.store().read_blocking(|r| -> Result<_> {
            Ok(r.conn()
                .rows(
                    "SELECT store FROM _due_stores WHERE due <= ? ORDER BY due LIMIT 1000",
                    &[Value::Integer(now.as_micros())],
                )?
                .into_iter()
                .filter_map(|row| match row.into_iter().next() {
                    Some(Value::Text(t)) => Some(t.into_owned()),
                    _ => None,
                })
                .collect())
        })?;
        let mut due = due;
        if self.on_postgres() && !due.is_empty() {
            // Several nodes run the same due stores: each starts at a place
            // of its own, so that they meet less often on one store (whose
            // writes run one at a time; what each runs is claimed in its
            // write, so meeting costs time, never a second run).
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize);
            let start = (nanos ^ std::process::id() as usize) % due.len();
            due.rotate_left(start);
        }
        for name in due {
            match self.existing_user_store(&name) {
                Ok(Some(store)) => {
                    if let Err(e) = self.run_store(&store, &name, now, &mut report) {
                        tracing::error!(store = %name, error = %e, "running due work failed");
                    }
                }
                Ok(None) | Err(_) => {
                    self.store().write_blocking(move |tx| {
                        tx.conn()
                            .execute(
                                "DELETE FROM _due_stores WHERE store = ?",
                                &[Value::Text(name.into())],
                            )
                            .map(drop)
                    })?;
                }
            }
        }
        Ok(report)
    }

    fn run_store(
        &self,
        store: &Store,
        name: &str,
        now: Timestamp,
        report: &mut DueReport,
    ) -> Result<()> {
        report.stores += 1;
        report.scheduled += store.run_due(now)?;
        report.processed += store
            .on_writer("Site::run_due", move |w| crate::queue::process(w, now))??
            .0;
        report.delivered += self.deliver_from(store, name, now)?.0;
        if name != SITE_STORE {
            // Holding the store's write lock, so that no write noting new work can
            // slip in between reading what is left and telling the site.
            let site = self.store().clone();
            let name = name.to_string();
            store.on_writer("Site::run_due", move |w| -> Result<()> {
                let next = crate::queue::next_work(w.conn(), &w.shared)?;
                site.write_blocking(move |tx| {
                    crate::schema::Internal::DueStores.ensure(tx.conn())?;
                    match next {
                        Some(due) => tx.conn().execute(
                            "INSERT INTO _due_stores (store, due) VALUES (?, ?)
                             ON CONFLICT (store) DO UPDATE SET due = excluded.due",
                            &[Value::Text(name.into()), Value::Integer(due.as_micros())],
                        )?,
                        None => tx.conn().execute(
                            "DELETE FROM _due_stores WHERE store = ?",
                            &[Value::Text(name.into())],
                        )?,
                    };
                    Ok(())
                })
            })??;
        }
        Ok(())
    }

    /// Runs [`Site::run_due`] every `tick` on the blocking pool until the
    /// returned handle is stopped.
    pub fn spawn_background(&self, tick: Duration) -> Background {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let site = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stopped.changed() => break,
                }
                let s = site.clone();
                match tokio::task::spawn_blocking(move || s.run_due(Timestamp::now())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "background work failed"),
                    Err(e) => tracing::error!(error = %e, "background work panicked"),
                }
            }
        });
        Background { stop, handle }
    }
}

/// The site's background work; stop it for a clean shutdown.
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stops after the current round finishes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}
