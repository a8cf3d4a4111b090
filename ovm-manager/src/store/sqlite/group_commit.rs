//! Group commit: one writer thread applies every commit waiting at the time in a single
//! SQLite transaction, each inside its own savepoint.
//!
//! A commit's cost is dominated by the transaction around it (taking the write lock,
//! appending WAL frames, checkpointing), not by its few rows. Many jobs commit at once
//! under load, so the writer takes all that are queued, applies each in a savepoint — a
//! commit whose expectation fails is rolled back alone and gets its `Conflict`, exactly
//! as if it had run by itself — and ends the batch with one `COMMIT`. A caller's reply
//! is sent only after that `COMMIT`, so nobody hears "done" for a write that is not
//! durable. Running SQLite on its own thread also keeps it off the async workers.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Result, StoreError};
use super::{lock, outcome_str};
use crate::Error;
use crate::model::Event;
use crate::store::{Expect, WriteOp};

/// Most commits applied in one transaction: bounds the latency of the first in a batch.
const MAX_BATCH: usize = 256;

/// One write, with its document already rendered (by the caller, off the writer thread).
pub(super) struct Write {
    kind: &'static str,
    id: String,
    expect: Expect,
    what: What,
}

enum What {
    Put(String),
    Delete,
    Check,
}

impl Write {
    pub(super) fn render(w: &WriteOp) -> Self {
        match w {
            WriteOp::Put {
                kind,
                id,
                expect,
                data,
            } => Write {
                kind,
                id: id.clone(),
                expect: *expect,
                what: What::Put(data.get().to_string()),
            },
            WriteOp::Delete { kind, id, expect } => Write {
                kind,
                id: id.clone(),
                expect: *expect,
                what: What::Delete,
            },
            WriteOp::Check { kind, id, expect } => Write {
                kind,
                id: id.clone(),
                expect: *expect,
                what: What::Check,
            },
        }
    }
}

/// A commit waiting for the writer.
pub(super) struct Request {
    pub writes: Vec<Write>,
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<ovm_core::Result<Vec<u64>>>,
}

/// Serves requests until every sender is gone.
pub(super) fn run(conn: Arc<Mutex<Connection>>, requests: Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let results = {
            let mut conn = lock(&conn);
            apply_batch(&mut conn, &batch)
        };
        for (req, result) in batch.into_iter().zip(results) {
            // The caller may have gone away (its task was dropped); nothing to tell.
            let _ = req.reply.send(result);
        }
    }
}

/// Applies a batch in one transaction; returns each request's outcome.
fn apply_batch(conn: &mut Connection, batch: &[Request]) -> Vec<ovm_core::Result<Vec<u64>>> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = Error::from(StoreError::from(e));
            return batch.iter().map(|_| Err(e.clone())).collect();
        }
    };
    let mut results: Vec<ovm_core::Result<Vec<u64>>> = Vec::with_capacity(batch.len());
    // Every write takes the next number of the store-wide sequence (the change feed's
    // order). The counter is read and written once per batch; numbers of writes rolled
    // back in their savepoint are simply skipped.
    let mut seq = match read_seq(&tx) {
        Ok(s) => s,
        Err(e) => {
            let e = Error::from(e);
            return batch.iter().map(|_| Err(e.clone())).collect();
        }
    };
    let first = seq;
    for req in batch {
        results.push(apply_one(&tx, req, &mut seq).map_err(Error::from));
    }
    if seq != first
        && let Err(e) = write_seq(&tx, seq)
    {
        let e = Error::from(e);
        return batch.iter().map(|_| Err(e.clone())).collect();
    }
    if let Err(e) = tx.commit() {
        let e = Error::from(StoreError::from(e));
        for r in &mut results {
            if r.is_ok() {
                *r = Err(e.clone());
            }
        }
    }
    results
}

/// Applies one request inside a savepoint of the batch's transaction: all of it or, on
/// any error, none of it.
fn apply_one(tx: &rusqlite::Transaction<'_>, req: &Request, seq: &mut u64) -> Result<Vec<u64>> {
    tx.execute_batch("SAVEPOINT request")?;
    match apply_writes(tx, req, seq) {
        Ok(revisions) => {
            tx.execute_batch("RELEASE request")?;
            Ok(revisions)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
            Err(e)
        }
    }
}

fn read_seq(tx: &rusqlite::Transaction<'_>) -> Result<u64> {
    let v: i64 = tx
        .prepare_cached("SELECT value FROM counters WHERE name = 'seq'")?
        .query_row([], |r| r.get(0))?;
    Ok(v as u64)
}

fn write_seq(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<()> {
    tx.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'seq'")?
        .execute(params![seq as i64])?;
    Ok(())
}

fn apply_writes(tx: &rusqlite::Transaction<'_>, req: &Request, seq: &mut u64) -> Result<Vec<u64>> {
    let mut revisions = Vec::with_capacity(req.writes.len());
    for w in &req.writes {
        // A deleted document stays as a tombstone: absent to readers and to `Expect`, but
        // its revision goes on counting when it is put back.
        let row: Option<(i64, bool)> = tx
            .prepare_cached("SELECT revision, deleted FROM objects WHERE kind = ?1 AND id = ?2")?
            .query_row(params![w.kind, w.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let last = row.map_or(0, |(rev, _)| rev as u64);
        let live = row.is_some_and(|(_, deleted)| !deleted);
        let found = if live { last } else { 0 };
        let ok = match w.expect {
            Expect::Any => true,
            Expect::Absent => !live,
            Expect::Revision(r) => live && found == r,
        };
        if !ok {
            return Err(Error::Conflict {
                kind: w.kind.to_string(),
                id: w.id.clone(),
                expected: w.expect.expected_revision(),
                found,
            }
            .into());
        }
        match &w.what {
            What::Check => revisions.push(found),
            What::Put(data) => {
                let next = last + 1;
                *seq += 1;
                tx.prepare_cached(
                    "INSERT INTO objects (kind, id, revision, data, seq, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (kind, id) DO UPDATE SET revision = ?3, data = ?4, seq = ?5,
                        deleted = 0",
                )?
                .execute(params![w.kind, w.id, next as i64, data, *seq as i64])?;
                revisions.push(next);
            }
            What::Delete => {
                if live {
                    *seq += 1;
                    tx.prepare_cached(
                        "UPDATE objects SET deleted = 1, data = 'null', revision = ?3, seq = ?4
                         WHERE kind = ?1 AND id = ?2",
                    )?
                    .execute(params![
                        w.kind,
                        w.id,
                        (last + 1) as i64,
                        *seq as i64
                    ])?;
                }
                revisions.push(0);
            }
        }
    }
    for e in &req.events {
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
    Ok(revisions)
}
