//! The PostgreSQL connection: the store's portable SQL, run on
//! `tokio-postgres` through a `deadpool-postgres` pool, from the store's
//! own threads.
//!
//! This is the part of the PostgreSQL backend that the rest will stand on
//! (see [`crate::backend`] for what a user store, statements, transactions
//! and types are there). It offers what the SQLite connection offers the
//! store — `batch`, `execute`, `insert`, `rows`, `scalar`, transactions —
//! with the same [`Value`]s in and out, so that the layers above can be
//! pointed at either.
//!
//! Why block here, on an async driver: the store runs a transaction as a
//! closure on its own threads (the writer pool, the reader threads), never
//! on an async worker, and the closure reads and writes synchronously, as
//! it does on SQLite. Those threads wait for PostgreSQL as they wait for
//! the disk; the connections' I/O runs on a small runtime of the backend's
//! own ([`io_runtime`]), so nothing here ever blocks a server's workers.
//! A call from an async worker is refused at once
//! ([`StoreError::BlockingInAsync`]), as the blocking calls of the store
//! are.
//!
//! Statements keep SQLite's `?` parameters; they are numbered here
//! (`$1`, `$2`…, [`numbered`]), outside quoted text and names.
//!
//! A statement that fails inside a transaction leaves the transaction
//! going, as on SQLite, where a closure may catch a refused insert and go
//! on: PostgreSQL would abort the whole transaction, so each statement in
//! one runs under a savepoint (sent together with the statement, in one
//! round trip), rolled back to when it fails.

use std::sync::OnceLock;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Row};

pub(crate) mod ddl;

use crate::error::{Result, StoreError};
use crate::value::Value;

/// The runtime that drives every PostgreSQL connection's I/O: one thread,
/// started when the first pool is made. Store threads wait on it with
/// `Handle::block_on`, which a multi-thread runtime allows from threads
/// that are not its own.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("mantissa-pg-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| database(format!("could not start PostgreSQL's I/O thread: {e}")))
}

fn database(reason: impl Into<String>) -> StoreError {
    StoreError::Database {
        path: "postgresql".into(),
        reason: reason.into(),
    }
}

/// Maps a driver error to a store error, in the terms the SQLite backend
/// uses (a constraint names what it is about).
fn classify(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 23: integrity constraint violations.
        if code.starts_with("23") {
            return StoreError::Constraint(db.message().to_string());
        }
        return database(format!("{} ({code})", db.message()));
    }
    // The driver's own words name the step ("error serializing parameter
    // 0"); the reason is its source's.
    match std::error::Error::source(&e) {
        Some(why) => database(format!("{e}: {why}")),
        None => database(e.to_string()),
    }
}

/// Refuses a call that would block an async worker.
fn refuse_in_async(call: &'static str) -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(StoreError::BlockingInAsync {
            call,
            instead: "Store::write(..).await or Store::read(..).await, which run on the store's threads",
        });
    }
    Ok(())
}

/// A pool of connections to one PostgreSQL database.
#[derive(Clone)]
pub(crate) struct PgPool {
    pool: Pool,
}

impl PgPool {
    /// A pool for `url` (`postgres://user@host:port/database`), of at most
    /// `size` connections. Connects lazily: a wrong address is reported by
    /// the first [`PgPool::get`].
    pub(crate) fn new(url: &str, size: usize) -> Result<PgPool> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| database(format!("{url:?} is not a PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| database(e.to_string()))?;
        Ok(PgPool { pool })
    }

    /// A connection, waiting for one to be free (on a store thread).
    pub(crate) fn get(&self) -> Result<PgConn> {
        refuse_in_async("PgPool::get")?;
        let rt = io_runtime()?;
        let pool = self.pool.clone();
        let client = rt
            .handle()
            .block_on(async move { pool.get().await })
            .map_err(|e| database(format!("no PostgreSQL connection: {e}")))?;
        Ok(PgConn {
            client,
            rt,
            in_transaction: std::cell::Cell::new(false),
        })
    }
}

/// One pooled connection, given back to its pool when dropped.
pub(crate) struct PgConn {
    client: deadpool_postgres::Object,
    rt: &'static tokio::runtime::Runtime,
    /// Whether a transaction is open (statements then run under a
    /// savepoint each).
    in_transaction: std::cell::Cell<bool>,
}

impl PgConn {
    fn wait<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        self.rt.handle().block_on(f).map_err(classify)
    }

    /// Runs `statement` on this connection; inside a transaction, under a
    /// savepoint sent with it, released after it or rolled back to when it
    /// failed (see the module documentation).
    fn guarded<T>(
        &self,
        statement: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        if !self.in_transaction.get() {
            return self.wait(statement);
        }
        let client = &self.client;
        let outcome = self.rt.handle().block_on(async {
            // Both are sent before either answer is read: one round trip.
            let (saved, done) = tokio::join!(
                client.batch_execute("SAVEPOINT mantissa_statement"),
                statement
            );
            saved?;
            match done {
                Ok(v) => {
                    client
                        .batch_execute("RELEASE SAVEPOINT mantissa_statement")
                        .await?;
                    Ok(Ok(v))
                }
                Err(e) => {
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT mantissa_statement")
                        .await?;
                    Ok(Err(e))
                }
            }
        });
        outcome.map_err(classify)?.map_err(classify)
    }

    /// `sql`, its parameters numbered, prepared once per connection.
    async fn prepared(
        &self,
        sql: &str,
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.client.prepare_cached(&numbered(sql)).await
    }

    /// Runs statements that take no parameters, `;`-separated.
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.guarded(self.client.batch_execute(sql))
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize> {
        let params = as_params(params);
        let n = self.guarded(async {
            let stmt = self.prepared(sql).await?;
            self.client.execute(&stmt, &params).await
        })?;
        Ok(n as usize)
    }

    /// Runs an `INSERT` into a table with an `id` column and returns the
    /// new row's id.
    pub(crate) fn insert(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        let row = self.query_one(&format!("{sql} RETURNING id"), params)?;
        match row.into_iter().next() {
            Some(Value::Integer(id)) => Ok(id),
            other => Err(database(format!("an insert returned {other:?}, not an id"))),
        }
    }

    fn query_one(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Value<'static>>> {
        self.rows(sql, params)?
            .into_iter()
            .next()
            .ok_or_else(|| database(format!("no row from {sql}")))
    }

    /// Every row of a query, each as its values in column order.
    pub(crate) fn rows(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Vec<Value<'static>>>> {
        let params = as_params(params);
        let rows = self.guarded(async {
            let stmt = self.prepared(sql).await?;
            self.client.query(&stmt, &params).await
        })?;
        rows.iter().map(values).collect()
    }

    /// The first column of the first row, if there is a row.
    pub(crate) fn scalar(&self, sql: &str, params: &[Value<'_>]) -> Result<Option<Value<'static>>> {
        Ok(self
            .rows(sql, params)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next()))
    }

    /// Begins a write transaction. Serializable: two writers of one store
    /// on two nodes cannot both act on what the other is changing (one
    /// fails, and is retried by the store, as a busy SQLite file is waited
    /// for).
    pub(crate) fn begin_write(&self) -> Result<()> {
        self.begin("BEGIN ISOLATION LEVEL SERIALIZABLE")
    }

    fn begin(&self, sql: &str) -> Result<()> {
        self.wait(self.client.batch_execute(sql))?;
        self.in_transaction.set(true);
        Ok(())
    }

    /// Begins a read transaction: one snapshot for all its statements, as
    /// a read on SQLite sees.
    pub(crate) fn begin_read(&self) -> Result<()> {
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    pub(crate) fn commit(&self) -> Result<()> {
        self.in_transaction.set(false);
        self.wait(self.client.batch_execute("COMMIT"))
    }

    /// Rolls back whatever transaction is open (none: nothing happens).
    pub(crate) fn rollback(&self) {
        self.in_transaction.set(false);
        let _ = self.wait(self.client.batch_execute("ROLLBACK"));
    }
}

/// `sql` with its `?` parameters numbered `$1`, `$2`…, leaving those in
/// quoted text ('…') and quoted names ("…") alone.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), c) if c == q => {
                // A doubled quote closes and reopens: the same either way.
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

fn as_params<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A row's values, read by each column's type.
fn values(row: &Row) -> Result<Vec<Value<'static>>> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let got = match *ty {
                Type::INT8 => row
                    .try_get::<_, Option<i64>>(i)
                    .map(|v| v.map(Value::Integer)),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)
                    .map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)
                    .map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)
                    .map(|v| v.map(|b| Value::Integer(b.into()))),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::Real)),
                Type::FLOAT4 => row
                    .try_get::<_, Option<f32>>(i)
                    .map(|v| v.map(|f| Value::Real(f.into()))),
                Type::BYTEA => row
                    .try_get::<_, Option<Vec<u8>>>(i)
                    .map(|v| v.map(|b| Value::Blob(b.into()))),
                _ => row
                    .try_get::<_, Option<String>>(i)
                    .map(|v| v.map(|s| Value::Text(s.into()))),
            };
            got.map(|v| v.unwrap_or(Value::Null)).map_err(|e| {
                database(format!(
                    "column {} ({ty}) cannot be read: {e}",
                    row.columns()[i].name()
                ))
            })
        })
        .collect()
}

/// A [`Value`] bound to a statement's parameter, in the parameter's type:
/// an integer is a `bigint`, `integer`, `smallint` or `boolean` (0 or not),
/// a real a `double precision` or `real`, text any text type, bytes
/// `bytea`. Anything else is refused with the types named.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(t), _) if <&str as ToSql>::accepts(ty) => t.as_ref().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_ref().to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} cannot be stored in a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Which types fit depends on the value, not only on its Rust type:
        // `to_sql` says, naming both.
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered(r#"SELECT "a?" FROM t WHERE x = ? AND y = '?' AND z IN (?, ?)"#),
            r#"SELECT "a?" FROM t WHERE x = $1 AND y = '?' AND z IN ($2, $3)"#
        );
        assert_eq!(numbered("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
    }
}

/// A PostgreSQL server for the tests: `$MANTISSA_TEST_POSTGRES` (which
/// `.ci/test` starts), or else one of the test binary's own, started with
/// `tests/postgres/cluster.sh` and stopped when the binary ends.
#[cfg(test)]
pub(crate) fn test_server() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("MANTISSA_TEST_POSTGRES") {
            return url;
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("mantissa-pg-test-{}", std::process::id()));
        let out = std::process::Command::new(root.join("tests/postgres/cluster.sh"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .expect("tests/postgres/cluster.sh runs");
        assert!(
            out.status.success(),
            "starting PostgreSQL for the tests failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .clone()
}

/// A new, empty database on [`test_server`], for one test, owned by an
/// ordinary role (`mantissa_test`), as a site's database is.
#[cfg(test)]
pub(crate) fn test_database() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = test_server();
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    );
    let admin = PgPool::new(&server, 1).unwrap().get().unwrap();
    // The store's role is an ordinary one: a superuser is not held to
    // row-level security, which keeps stores apart.
    static ROLE: OnceLock<()> = OnceLock::new();
    ROLE.get_or_init(|| {
        // Another test binary may make it at the same moment: then it is
        // there, which is all that is wanted.
        let made = admin.batch("CREATE ROLE mantissa_test LOGIN NOSUPERUSER NOBYPASSRLS");
        if let Err(e) = made {
            let there = admin
                .scalar(
                    "SELECT 1 FROM pg_roles WHERE rolname = 'mantissa_test'",
                    &[],
                )
                .unwrap();
            assert!(there.is_some(), "the tests' role cannot be made: {e}");
        }
    });
    admin
        .batch(&format!("CREATE DATABASE {name} OWNER mantissa_test"))
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    let base = base.replacen("postgres://postgres@", "postgres://mantissa_test@", 1);
    format!("{base}/{name}")
}

#[cfg(test)]
mod on_a_server {
    use super::*;

    fn conn() -> PgConn {
        PgPool::new(&test_database(), 2).unwrap().get().unwrap()
    }

    fn table(c: &PgConn) {
        c.batch(
            "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                n BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA, flag BOOLEAN, small INTEGER)",
        )
        .unwrap();
    }

    #[test]
    fn values_go_in_and_come_back_the_same() {
        let c = conn();
        table(&c);
        let text = "it's \"quoted\", ünïcødé, and a ? mark";
        let id = c
            .insert(
                "INSERT INTO t (n, f, s, b, flag, small) VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    Value::Integer(i64::MIN),
                    Value::Real(-0.125),
                    Value::Text(text.into()),
                    Value::Blob(vec![0, 255, 7].into()),
                    Value::Integer(1),
                    Value::Integer(42),
                ],
            )
            .unwrap();
        let second = c
            .insert(
                "INSERT INTO t (n, f, s, b, flag, small) VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            )
            .unwrap();
        assert!(second > id, "ids only grow: {id} then {second}");
        let rows = c
            .rows(
                "SELECT n, f, s, b, flag, small FROM t WHERE id = ?",
                &[Value::Integer(id)],
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Value::Integer(i64::MIN),
                Value::Real(-0.125),
                Value::Text(text.into()),
                Value::Blob(vec![0, 255, 7].into()),
                Value::Integer(1),
                Value::Integer(42),
            ]]
        );
        let nulls = c
            .rows(
                "SELECT n, f, s, b, flag, small FROM t WHERE id = ?",
                &[Value::Integer(second)],
            )
            .unwrap();
        assert_eq!(nulls, vec![vec![Value::Null; 6]]);
        assert_eq!(
            c.scalar(
                "SELECT COUNT(*) FROM t WHERE s = ?",
                &[Value::Text(text.into())]
            )
            .unwrap(),
            Some(Value::Integer(1))
        );
        assert_eq!(
            c.scalar("SELECT s FROM t WHERE id = ?", &[Value::Integer(-1)])
                .unwrap(),
            None
        );
        assert_eq!(
            c.execute("UPDATE t SET n = ? WHERE n IS NULL", &[Value::Integer(7)])
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_rolled_back_write_leaves_nothing_and_a_committed_one_stays() {
        let c = conn();
        table(&c);
        c.begin_write().unwrap();
        c.execute(
            "INSERT INTO t (s) VALUES (?)",
            &[Value::Text("gone".into())],
        )
        .unwrap();
        c.rollback();
        c.begin_write().unwrap();
        c.execute(
            "INSERT INTO t (s) VALUES (?)",
            &[Value::Text("kept".into())],
        )
        .unwrap();
        c.commit().unwrap();
        c.begin_read().unwrap();
        let all = c.rows("SELECT s FROM t", &[]).unwrap();
        c.commit().unwrap();
        assert_eq!(all, vec![vec![Value::Text("kept".into())]]);
    }

    #[test]
    fn mistakes_are_refused_saying_what_was_wrong() {
        let c = conn();
        c.batch("CREATE TABLE u (name TEXT NOT NULL UNIQUE)")
            .unwrap();
        c.execute(
            "INSERT INTO u (name) VALUES (?)",
            &[Value::Text("ann".into())],
        )
        .unwrap();
        let dup = c
            .execute(
                "INSERT INTO u (name) VALUES (?)",
                &[Value::Text("ann".into())],
            )
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::Constraint(ref m) if m.contains("unique")),
            "{dup}"
        );
        let null = c
            .execute("INSERT INTO u (name) VALUES (?)", &[Value::Null])
            .unwrap_err();
        assert!(matches!(null, StoreError::Constraint(_)), "{null}");
        // A value of the wrong kind names both kinds; nothing is written.
        let wrong = c
            .execute(
                "INSERT INTO u (name) VALUES (?)",
                &[Value::Blob(vec![1].into())],
            )
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("cannot be stored in a text parameter"),
            "{wrong}"
        );
        assert_eq!(
            c.scalar("SELECT COUNT(*) FROM u", &[]).unwrap(),
            Some(Value::Integer(1))
        );
        let bad = c
            .rows("SELECT nothing FROM nowhere", &[])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("nowhere"), "{bad}");
    }

    #[test]
    fn a_wrong_address_or_a_call_from_an_async_worker_is_refused_at_once() {
        let wrong = PgPool::new("postgres://nobody@127.0.0.1:1/none", 1)
            .unwrap()
            .get()
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("no PostgreSQL connection"), "{wrong}");
        assert!(PgPool::new("not a url", 1).is_err());
        let pool = PgPool::new(&test_database(), 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let refused = rt.block_on(async { pool.get().err() });
        assert!(
            matches!(refused, Some(StoreError::BlockingInAsync { .. })),
            "{refused:?}"
        );
    }
}
