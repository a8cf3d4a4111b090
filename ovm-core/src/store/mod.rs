//! The manager's repository of record.
//!
//! The `Store` trait is deliberately narrow — versioned JSON documents keyed by
//! `(kind, id)`, atomic multi-document commits with optimistic concurrency, and an
//! append-only event log — so that a PostgreSQL implementation can follow the embedded
//! SQLite one without touching the manager.

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{
    Assembly, Event, EventQuery, Job, ManagerInstance, Network, Repository, Server, ServerPool,
    Template, Vm, Volume,
};
use crate::{Error, Result};

/// What a write expects to find, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// Nothing: the object must not exist yet.
    Absent,
    /// Exactly this revision.
    Revision(u64),
}

impl Expect {
    /// The revision this expectation names, 0 for `Absent` (used in `Conflict` errors).
    pub fn expected_revision(self) -> u64 {
        match self {
            Expect::Revision(r) => r,
            Expect::Any | Expect::Absent => 0,
        }
    }
}

/// A document as JSON text: written as it was rendered, decoded straight into its type
/// (no intermediate `serde_json::Value` tree on the hot path).
pub type Document = Box<serde_json::value::RawValue>;

/// One write of an atomic commit.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create or replace a document.
    Put {
        /// Its kind.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What must be there now.
        expect: Expect,
        /// The new content.
        data: Document,
    },
    /// Delete a document (deleting an absent one with `Expect::Any` is not an error).
    Delete {
        /// Its kind.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What must be there now.
        expect: Expect,
    },
    /// Write nothing, but commit only if a document is as expected: a lease that must
    /// still be held when the writes beside it land.
    Check {
        /// Its kind.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What must be there now.
        expect: Expect,
    },
}

impl WriteOp {
    /// A put of a typed object.
    pub fn put<T: Object>(obj: &T, expect: Expect) -> Result<Self> {
        Ok(WriteOp::Put {
            kind: T::KIND,
            id: obj.key(),
            expect,
            data: serde_json::value::to_raw_value(obj)?,
        })
    }

    /// A delete of a typed object.
    pub fn delete<T: Object>(id: impl ToString, expect: Expect) -> Self {
        WriteOp::Delete {
            kind: T::KIND,
            id: id.to_string(),
            expect,
        }
    }
}

/// A stored document.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its revision: 1 when created, +1 on every update.
    pub revision: u64,
    /// Its content.
    pub data: Document,
}

/// A typed object with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The revision it was read at.
    pub revision: u64,
    /// The object.
    pub value: T,
}

/// The latest change of one document, as the change feed reports it.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    /// Its kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its revision after the change (revisions keep counting across a delete, so a
    /// document put back after one never repeats a revision it had before).
    pub revision: u64,
    /// Where the change stands in the store's order of changes.
    pub seq: u64,
    /// The content, `None` if the change deleted the document.
    pub data: Option<Document>,
}

/// A stored document that cannot be read as what its kind says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// Its kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The store of record.
#[async_trait]
pub trait Store: Send + Sync {
    /// Backend name (`sqlite`), used in errors.
    fn backend(&self) -> &str;

    /// One document.
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Record>>;

    /// All documents of a kind. A document that is not JSON at all is left out (and
    /// logged): one damaged record must not hide every other one. [`Store::damaged`]
    /// lists them.
    async fn list(&self, kind: &str) -> Result<Vec<Record>>;

    /// The documents of a kind whose top-level `field` (a plain identifier) is a JSON
    /// string among `values`: how unfinished jobs are found without reading every job.
    /// Backends with indexes override it; this default filters a full listing.
    async fn list_by_field(&self, kind: &str, field: &str, values: &[&str]) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for r in self.list(kind).await? {
            let v: serde_json::Value = serde_json::from_str(r.data.get())?;
            if v.get(field)
                .and_then(|f| f.as_str())
                .is_some_and(|f| values.contains(&f))
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The change feed: the latest change of every document of `kinds` made after `since`
    /// (a [`FeedEntry::seq`]), oldest first, at most `limit`. A reader that applies the
    /// entries in order and asks again from the last `seq` sees every committed change.
    async fn changes(&self, kinds: &[&str], since: u64, limit: usize) -> Result<Vec<FeedEntry>>;

    /// The `seq` of the latest change of any document (0 for an empty store).
    async fn head(&self) -> Result<u64>;

    /// Documents stored as something that is not JSON.
    async fn damaged(&self) -> Result<Vec<Damaged>>;

    /// Moves a document out of the way (into the store's quarantine, with `reason`), so
    /// that it no longer takes part in reads and writes. Returns false if it is absent.
    async fn quarantine(&self, kind: &str, id: &str, reason: &str) -> Result<bool>;

    /// The revision of one document, without reading it (`None` if absent): how a job
    /// notices, cheaply, that another process changed its record.
    async fn revision(&self, kind: &str, id: &str) -> Result<Option<u64>> {
        Ok(self.get(kind, id).await?.map(|r| r.revision))
    }

    /// Applies every write and appends every event in one transaction: all or nothing.
    /// A write whose expectation fails aborts the whole commit with `Error::Conflict`.
    /// Returns the new revision of each write (0 for deletes, the current one for checks).
    async fn commit(&self, writes: &[WriteOp], events: &[Event]) -> Result<Vec<u64>>;

    /// Events matching a query, oldest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>>;
}

/// A model type stored as a document.
pub trait Object: Serialize + DeserializeOwned + Send + Sync {
    /// Its kind in the store.
    const KIND: &'static str;
    /// Its id as stored.
    fn key(&self) -> String;
}

macro_rules! object {
    ($($t:ty = $kind:literal;)*) => {$(
        impl Object for $t {
            const KIND: &'static str = $kind;
            fn key(&self) -> String {
                self.id.to_string()
            }
        }
    )*};
}

object! {
    ServerPool = "pool";
    Server = "server";
    Vm = "vm";
    Repository = "repository";
    Volume = "volume";
    Network = "network";
    Template = "template";
    Assembly = "assembly";
    Job = "job";
    ManagerInstance = "instance";
}

/// Typed access on top of any `Store`.
#[async_trait]
pub trait StoreExt: Store {
    /// One typed object.
    async fn get_obj<T: Object>(&self, id: &str) -> Result<Option<Versioned<T>>> {
        match self.get(T::KIND, id).await? {
            Some(r) => Ok(Some(decode(r)?)),
            None => Ok(None),
        }
    }

    /// All objects of a type. A document that does not decode as one is left out and
    /// logged with its id (`ovm store check` lists them), so one damaged record does not
    /// stop every listing.
    async fn list_obj<T: Object>(&self) -> Result<Vec<Versioned<T>>> {
        Ok(decode_all(self.list(T::KIND).await?))
    }

    /// Writes one object; returns its new revision.
    async fn put_obj<T: Object>(&self, obj: &T, expect: Expect) -> Result<u64> {
        let revs = self.commit(&[WriteOp::put(obj, expect)?], &[]).await?;
        Ok(revs.first().copied().unwrap_or_default())
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Decodes records, leaving out (and logging) those that are damaged.
pub fn decode_all<T: Object>(records: Vec<Record>) -> Vec<Versioned<T>> {
    records
        .into_iter()
        .filter_map(|r| match decode(r) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("skipped: {e} (see `ovm store check`)");
                None
            }
        })
        .collect()
}

/// Decodes a record into a typed object, naming it if the document is damaged.
pub fn decode<T: Object>(r: Record) -> Result<Versioned<T>> {
    let value = serde_json::from_str(r.data.get()).map_err(|e| {
        Error::backend(
            "store",
            format!("{} {} is not a valid document: {e}", r.kind, r.id),
        )
    })?;
    Ok(Versioned {
        revision: r.revision,
        value,
    })
}
