//! The embedded store: SQLite in WAL mode, one row per document.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Expect, Record, Store, WriteOp};
use crate::id::{JobId, Timestamp};
use crate::model::{Event, EventQuery, Outcome};
use crate::{Error, Result};

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
];

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| {
            Error::backend(
                "sqlite",
                format!("cannot open store {}: {e}", path.display()),
            )
        })?;
        // WAL: readers never block the writer; NORMAL sync: durable at checkpoints and
        // safe against corruption on power loss (the last commits may be lost, not torn).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A private in-memory store (tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
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
            ));
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction behind (rusqlite
        // rolls back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record(kind: &str, id: &str, revision: i64, data: &str) -> Result<Record> {
    Ok(Record {
        kind: kind.to_string(),
        id: id.to_string(),
        revision: revision as u64,
        data: serde_json::from_str(data).map_err(|e| {
            Error::backend(
                "sqlite",
                format!("{kind} {id}: stored document is not JSON: {e}"),
            )
        })?,
    })
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

    async fn get(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT revision, data FROM objects WHERE kind = ?1 AND id = ?2")?;
        let row = stmt
            .query_row(params![kind, id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        row.map(|(rev, data)| record(kind, id, rev, &data))
            .transpose()
    }

    async fn list(&self, kind: &str) -> Result<Vec<Record>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT id, revision, data FROM objects WHERE kind = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![kind], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rev, data) = row?;
            out.push(record(kind, &id, rev, &data)?);
        }
        Ok(out)
    }

    async fn commit(&self, writes: &[WriteOp], events: &[Event]) -> Result<Vec<u64>> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut revisions = Vec::with_capacity(writes.len());
        for w in writes {
            let (kind, id, expect) = match w {
                WriteOp::Put {
                    kind, id, expect, ..
                }
                | WriteOp::Delete { kind, id, expect } => (*kind, id.as_str(), *expect),
            };
            let current: Option<i64> = tx
                .prepare_cached("SELECT revision FROM objects WHERE kind = ?1 AND id = ?2")?
                .query_row(params![kind, id], |r| r.get(0))
                .optional()?;
            let found = current.unwrap_or(0) as u64;
            let ok = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Revision(r) => current.is_some() && found == r,
            };
            if !ok {
                // Dropping `tx` rolls back everything written so far.
                return Err(Error::Conflict {
                    kind: kind.to_string(),
                    id: id.to_string(),
                    expected: expect.expected_revision(),
                    found,
                });
            }
            match w {
                WriteOp::Put { data, .. } => {
                    let next = found + 1;
                    tx.prepare_cached(
                        "INSERT INTO objects (kind, id, revision, data) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (kind, id) DO UPDATE SET revision = ?3, data = ?4",
                    )?
                    .execute(params![
                        kind,
                        id,
                        next as i64,
                        data.to_string()
                    ])?;
                    revisions.push(next);
                }
                WriteOp::Delete { .. } => {
                    tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND id = ?2")?
                        .execute(params![kind, id])?;
                    revisions.push(0);
                }
            }
        }
        for e in events {
            tx.prepare_cached(
                "INSERT INTO events (time, initiator, object_kind, object_id, action, outcome, detail, job)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.time.0 as i64,
                e.initiator,
                e.object_kind,
                e.object_id,
                e.action,
                outcome_str(e.outcome),
                e.detail,
                e.job.map(|j| j.to_string()),
            ])?;
        }
        tx.commit()?;
        Ok(revisions)
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;

    fn put(id: &str, expect: Expect, v: i64) -> WriteOp {
        WriteOp::Put {
            kind: "thing",
            id: id.into(),
            expect,
            data: serde_json::json!({ "v": v }),
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
        assert_eq!(s.get("thing", "a").await.unwrap().unwrap().data["v"], 2);
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
