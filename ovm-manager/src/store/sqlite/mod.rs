//! The embedded store: SQLite in WAL mode, one row per document, writes group-committed
//! by one writer thread ([`group_commit`]).

mod group_commit;

use ovm_core::sync::lock;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Damaged, FeedEntry, Record, Store, WriteOp};
use crate::Error;
use crate::id::{JobId, Timestamp};
use crate::model::{Event, EventQuery, Outcome};

/// What a store operation fails with inside this module: SQLite's error or ovm's (a
/// conflict, a document that is not JSON). Turned into an ovm [`Error`] at the edge.
#[derive(Debug)]
pub(super) enum StoreError {
    Sql(rusqlite::Error),
    Ovm(Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Ovm(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Ovm(e.into())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Ovm(e.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Sql(e) => Error::backend_source("sqlite", e),
            StoreError::Ovm(e) => e,
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs `f`, turning its error into an ovm [`Error`].
fn sql<T>(f: impl FnOnce() -> Result<T>) -> ovm_core::Result<T> {
    f().map_err(Error::from)
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: documents and the event log.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;
     CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        initiator TEXT NOT NULL,
        object_kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        job TEXT
     );
     CREATE INDEX events_by_object ON events (object_id, time);
     CREATE INDEX events_by_time ON events (time);",
    // 2: the change feed (a store-wide sequence number per write, deletes kept as
    // tombstones so that revisions never repeat and readers see removals), jobs found by
    // state, and a quarantine for damaged documents.
    "ALTER TABLE objects ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX objects_by_seq ON objects (kind, seq);
     CREATE INDEX jobs_by_state ON objects (iif(json_valid(data), json_extract(data, '$.state'), NULL))
        WHERE kind = 'job';
     CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO counters (name, value) VALUES ('seq', 0);
     CREATE TABLE quarantine (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        data TEXT NOT NULL,
        reason TEXT NOT NULL,
        time INTEGER NOT NULL
     );",
];

/// The expression a document's top-level `field` is read with; the same text in a query
/// and in an index lets SQLite use the index (`jobs_by_state`). Damaged documents read
/// as NULL instead of failing the statement.
fn field_expr(field: &str) -> Result<String> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(Error::invalid(
            "store field",
            format!("{field:?} is not a plain field name"),
        )
        .into());
    }
    Ok(format!(
        "iif(json_valid(data), json_extract(data, '$.{field}'), NULL)"
    ))
}

/// `?2, ?3, ...`: placeholders for a list of values after `first - 1` others.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQLite store.
pub struct SqliteStore {
    /// Reads use it. On disk it is a connection of its own: WAL lets it read the last
    /// committed state while the writer works, so a read never waits for a batch.
    reader: Arc<Mutex<Connection>>,
    /// Commits queue here for the writer thread (`None` only while dropping).
    writer: Option<mpsc::Sender<group_commit::Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered what was queued; joining
        // it means the database is closed when the store is gone.
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> ovm_core::Result<Self> {
        let path = path.as_ref();
        let open = || -> Result<Connection> {
            let conn = Connection::open(path).map_err(|e| {
                Error::backend(
                    "sqlite",
                    format!("cannot open store {}: {e}", path.display()),
                )
            })?;
            // WAL: readers never block the writer; NORMAL sync: durable at checkpoints and
            // safe against corruption on power loss (the last commits may be lost, not
            // torn).
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn)
        };
        sql(|| {
            let writer = Self::migrate(open()?)?;
            // The writer rewrites job records at every step: keep its hot pages cached (the
            // cache grows to this bound only as needed).
            writer.pragma_update(None, "cache_size", -16384)?;
            let reader = open()?;
            reader.busy_timeout(BUSY_TIMEOUT)?;
            Self::start(Arc::new(Mutex::new(writer)), Arc::new(Mutex::new(reader)))
        })
    }

    /// A private in-memory store (tests). Reads and the writer share its one connection.
    pub fn in_memory() -> ovm_core::Result<Self> {
        sql(|| {
            let conn = Arc::new(Mutex::new(Self::migrate(Connection::open_in_memory()?)?));
            Self::start(conn.clone(), conn)
        })
    }

    /// Brings the schema up to date.
    fn migrate(mut conn: Connection) -> Result<Connection> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(Error::backend(
                "sqlite",
                format!(
                    "store schema version {version} is newer than this ovm ({}); upgrade ovm",
                    MIGRATIONS.len()
                ),
            )
            .into());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(conn)
    }

    /// Starts the writer thread on `writer`.
    fn start(writer: Arc<Mutex<Connection>>, reader: Arc<Mutex<Connection>>) -> Result<Self> {
        let (queue, requests) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ovm-store-writer".into())
            .spawn(move || group_commit::run(writer, requests))
            .map_err(|e| Error::backend("sqlite", format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            reader,
            writer: Some(queue),
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.reader)
    }
}

/// How long a connection waits for another process's lock before it reports an error.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn record(kind: &str, id: &str, revision: i64, data: String) -> Result<Record> {
    Ok(Record {
        kind: kind.to_string(),
        id: id.to_string(),
        revision: revision as u64,
        data: serde_json::value::RawValue::from_string(data).map_err(|e| {
            Error::backend(
                "sqlite",
                format!("{kind} {id}: stored document is not JSON: {e}"),
            )
        })?,
    })
}

/// Records from `(id, revision, data)` rows; a row that is not JSON is left out and
/// logged, so one damaged document does not fail every listing.
fn collect_records(
    kind: &str,
    rows: impl Iterator<Item = rusqlite::Result<(String, i64, String)>>,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for row in rows {
        let (id, rev, data) = row?;
        match record(kind, &id, rev, data) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!("skipped: {} (see `ovm store check`)", Error::from(e)),
        }
    }
    Ok(out)
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Info => "info",
    }
}

fn parse_outcome(s: &str) -> Outcome {
    match s {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        _ => Outcome::Info,
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &str {
        "sqlite"
    }

    async fn get(&self, kind: &str, id: &str) -> ovm_core::Result<Option<Record>> {
        sql(|| {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT revision, data FROM objects WHERE kind = ?1 AND id = ?2 AND deleted = 0",
            )?;
            let row = stmt
                .query_row(params![kind, id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?;
            row.map(|(rev, data)| record(kind, id, rev, data))
                .transpose()
        })
    }

    async fn revision(&self, kind: &str, id: &str) -> ovm_core::Result<Option<u64>> {
        sql(|| {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT revision FROM objects WHERE kind = ?1 AND id = ?2 AND deleted = 0",
            )?;
            let rev = stmt
                .query_row(params![kind, id], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(rev.map(|r| r as u64))
        })
    }

    async fn list(&self, kind: &str) -> ovm_core::Result<Vec<Record>> {
        sql(|| {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT id, revision, data FROM objects WHERE kind = ?1 AND deleted = 0 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![kind], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            collect_records(kind, rows)
        })
    }

    async fn list_by_field(
        &self,
        kind: &str,
        field: &str,
        values: &[&str],
    ) -> ovm_core::Result<Vec<Record>> {
        sql(|| {
            let sql = format!(
                "SELECT id, revision, data FROM objects
                 WHERE kind = ?1 AND deleted = 0 AND {} IN ({}) ORDER BY id",
                field_expr(field)?,
                placeholders(2, values.len())
            );
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&kind];
            args.extend(values.iter().map(|v| v as &dyn rusqlite::ToSql));
            let rows = stmt.query_map(args.as_slice(), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            collect_records(kind, rows)
        })
    }

    async fn changes(
        &self,
        kinds: &[&str],
        since: u64,
        limit: usize,
    ) -> ovm_core::Result<Vec<FeedEntry>> {
        sql(|| {
            let sql = format!(
                "SELECT kind, id, revision, seq, deleted, data FROM objects
                 WHERE kind IN ({}) AND seq > ?1 ORDER BY seq LIMIT ?2",
                placeholders(3, kinds.len())
            );
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(&sql)?;
            let since = since as i64;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&since, &limit];
            args.extend(kinds.iter().map(|k| k as &dyn rusqlite::ToSql));
            let rows = stmt.query_map(args.as_slice(), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, id, revision, seq, deleted, data) = row?;
                let data = if deleted {
                    None
                } else {
                    match serde_json::value::RawValue::from_string(data) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            // A damaged document reads as gone: readers drop what they held.
                            tracing::warn!("{kind} {id}: stored document is not JSON: {e}");
                            None
                        }
                    }
                };
                out.push(FeedEntry {
                    kind,
                    id,
                    revision: revision as u64,
                    seq: seq as u64,
                    data,
                });
            }
            Ok(out)
        })
    }

    async fn head(&self) -> ovm_core::Result<u64> {
        sql(|| {
            let conn = self.lock();
            let v: i64 = conn
                .prepare_cached("SELECT value FROM counters WHERE name = 'seq'")?
                .query_row([], |r| r.get(0))?;
            Ok(v as u64)
        })
    }

    async fn damaged(&self) -> ovm_core::Result<Vec<Damaged>> {
        sql(|| {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT kind, id FROM objects WHERE deleted = 0 AND NOT json_valid(data)
                 ORDER BY kind, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Damaged {
                    kind: r.get(0)?,
                    id: r.get(1)?,
                    reason: "stored document is not JSON".into(),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    async fn quarantine(&self, kind: &str, id: &str, reason: &str) -> ovm_core::Result<bool> {
        sql(|| {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let moved = tx.execute(
                "INSERT INTO quarantine (kind, id, revision, data, reason, time)
                 SELECT kind, id, revision, data, ?3, ?4 FROM objects
                 WHERE kind = ?1 AND id = ?2 AND deleted = 0",
                params![kind, id, reason, Timestamp::now().0 as i64],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            let seq: i64 = tx.query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE objects SET deleted = 1, data = 'null', revision = revision + 1, seq = ?3
                 WHERE kind = ?1 AND id = ?2",
                params![kind, id, seq],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    async fn commit(&self, writes: &[WriteOp], events: &[Event]) -> ovm_core::Result<Vec<u64>> {
        let closed = || Error::backend("sqlite", "the store's writer has stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = group_commit::Request {
            writes: writes.iter().map(group_commit::Write::render).collect(),
            events: events.to_vec(),
            reply,
        };
        self.writer
            .as_ref()
            .ok_or_else(closed)?
            .send(request)
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn events(&self, q: &EventQuery) -> ovm_core::Result<Vec<Event>> {
        sql(|| {
            let conn = self.lock();
            // Newest first so that a limit keeps the latest; reversed below to oldest first.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, time, initiator, object_kind, object_id, action, outcome, detail, job
                 FROM events
                 WHERE (?1 IS NULL OR object_id = ?1) AND (?2 IS NULL OR time >= ?2)
                   AND (?3 IS NULL OR time < ?3)
                 ORDER BY seq DESC LIMIT ?4",
            )?;
            let limit = q.limit.map(i64::from).unwrap_or(-1);
            let rows = stmt.query_map(
                params![
                    q.object_id,
                    q.since.map(|t| t.0 as i64),
                    q.until.map(|t| t.0 as i64),
                    limit
                ],
                |r| {
                    Ok(Event {
                        seq: r.get::<_, i64>(0)? as u64,
                        time: Timestamp(r.get::<_, i64>(1)? as u64),
                        initiator: r.get(2)?,
                        object_kind: r.get(3)?,
                        object_id: r.get(4)?,
                        action: r.get(5)?,
                        outcome: parse_outcome(&r.get::<_, String>(6)?),
                        detail: r.get(7)?,
                        job: r
                            .get::<_, Option<String>>(8)?
                            .and_then(|s| s.parse::<JobId>().ok()),
                    })
                },
            )?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Expect, StoreExt};

    fn put(id: &str, expect: Expect, v: i64) -> WriteOp {
        WriteOp::Put {
            kind: "thing",
            id: id.into(),
            expect,
            data: serde_json::value::to_raw_value(&serde_json::json!({ "v": v })).unwrap(),
        }
    }

    #[tokio::test]
    async fn revisions_and_conflicts() {
        let s = SqliteStore::in_memory().unwrap();
        assert_eq!(
            s.commit(&[put("a", Expect::Absent, 1)], &[]).await.unwrap(),
            vec![1]
        );
        assert_eq!(
            s.commit(&[put("a", Expect::Revision(1), 2)], &[])
                .await
                .unwrap(),
            vec![2]
        );
        // A writer that read revision 1 loses: Conflict, not a lost update.
        let err = s
            .commit(&[put("a", Expect::Revision(1), 3)], &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = s
            .commit(&[put("a", Expect::Absent, 3)], &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        assert_eq!(
            s.get("thing", "a").await.unwrap().unwrap().data.get(),
            r#"{"v":2}"#
        );
        assert_eq!(s.revision("thing", "a").await.unwrap(), Some(2));
        assert_eq!(s.revision("thing", "zz").await.unwrap(), None);
    }

    #[tokio::test]
    async fn commits_are_all_or_nothing() {
        let s = SqliteStore::in_memory().unwrap();
        s.commit(&[put("a", Expect::Absent, 1)], &[]).await.unwrap();
        let ev = Event {
            seq: 0,
            time: Timestamp(5),
            initiator: "t".into(),
            object_kind: "thing".into(),
            object_id: "b".into(),
            action: "create".into(),
            outcome: Outcome::Success,
            detail: String::new(),
            job: None,
        };
        let err = s
            .commit(
                &[put("b", Expect::Absent, 1), put("a", Expect::Absent, 9)],
                std::slice::from_ref(&ev),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        assert!(
            s.get("thing", "b").await.unwrap().is_none(),
            "b must not be half-written"
        );
        assert!(s.events(&EventQuery::default()).await.unwrap().is_empty());
        s.commit(&[put("b", Expect::Absent, 1)], &[ev])
            .await
            .unwrap();
        let evs = s
            .events(&EventQuery {
                object_id: Some("b".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].seq, 1);
    }

    /// Concurrent commits land in shared transactions, yet each is all-or-nothing on its
    /// own: of many racing to create the same object exactly one wins, and the losers'
    /// other writes and events are not half-applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_committed_requests_keep_their_own_outcome() {
        let s = Arc::new(SqliteStore::in_memory().unwrap());
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let ev = Event {
                    seq: 0,
                    time: Timestamp(i),
                    initiator: "t".into(),
                    object_kind: "thing".into(),
                    object_id: format!("own{i}"),
                    action: "race".into(),
                    outcome: Outcome::Info,
                    detail: String::new(),
                    job: None,
                };
                let own = put(&format!("own{i}"), Expect::Absent, i as i64);
                s.commit(&[own, put("shared", Expect::Absent, i as i64)], &[ev])
                    .await
            }));
        }
        let mut winners = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(revs) => {
                    winners += 1;
                    assert_eq!(revs, vec![1, 1]);
                    assert!(s.get("thing", &format!("own{i}")).await.unwrap().is_some());
                }
                Err(Error::Conflict { id, .. }) => {
                    assert_eq!(id, "shared");
                    assert!(
                        s.get("thing", &format!("own{i}")).await.unwrap().is_none(),
                        "loser {i} half-applied"
                    );
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, 1);
        assert_eq!(s.events(&EventQuery::default()).await.unwrap().len(), 1);
        assert_eq!(s.list("thing").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn reopens_with_schema_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ovm.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.commit(&[put("a", Expect::Absent, 1)], &[]).await.unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.list("thing").await.unwrap().len(), 1);
        assert!(
            s.get_obj::<crate::model::Vm>("nope")
                .await
                .unwrap()
                .is_none()
        );
    }
}
