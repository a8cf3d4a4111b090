//! Changes to stored objects made by jobs: committed atomically with their undos and the
//! job record, then reflected in the index.

use super::Manager;
use super::cache::Cache;
use crate::job::{JobCtx, JobHandle, JobSpec};
use crate::model::{Network, Repository, Server, ServerPool, Undo, Vm};
use crate::store::{Document, Expect, Object, Versioned, WriteOp};
use crate::{Error, Result};

/// A stored object of any kind the manager indexes.
#[derive(Debug, Clone)]
pub(crate) enum Doc {
    Pool(ServerPool),
    Server(Server),
    Vm(Vm),
    Repo(Repository),
    Network(Network),
}

impl Doc {
    fn kind(&self) -> &'static str {
        match self {
            Doc::Pool(_) => ServerPool::KIND,
            Doc::Server(_) => Server::KIND,
            Doc::Vm(_) => Vm::KIND,
            Doc::Repo(_) => Repository::KIND,
            Doc::Network(_) => Network::KIND,
        }
    }

    fn key(&self) -> String {
        match self {
            Doc::Pool(o) => o.key(),
            Doc::Server(o) => o.key(),
            Doc::Vm(o) => o.key(),
            Doc::Repo(o) => o.key(),
            Doc::Network(o) => o.key(),
        }
    }

    fn json(&self) -> Result<serde_json::Value> {
        Ok(match self {
            Doc::Pool(o) => serde_json::to_value(o)?,
            Doc::Server(o) => serde_json::to_value(o)?,
            Doc::Vm(o) => serde_json::to_value(o)?,
            Doc::Repo(o) => serde_json::to_value(o)?,
            Doc::Network(o) => serde_json::to_value(o)?,
        })
    }

    fn document(&self) -> Result<Document> {
        use serde_json::value::to_raw_value;
        Ok(match self {
            Doc::Pool(o) => to_raw_value(o)?,
            Doc::Server(o) => to_raw_value(o)?,
            Doc::Vm(o) => to_raw_value(o)?,
            Doc::Repo(o) => to_raw_value(o)?,
            Doc::Network(o) => to_raw_value(o)?,
        })
    }

    fn put_into(self, c: &mut Cache, revision: u64) {
        match self {
            Doc::Pool(value) => c.put_pool(Versioned { revision, value }),
            Doc::Server(value) => c.put_server(Versioned { revision, value }),
            Doc::Vm(value) => c.put_vm(Versioned { revision, value }),
            Doc::Repo(value) => c.put_repo(Versioned { revision, value }),
            Doc::Network(value) => c.put_network(Versioned { revision, value }),
        }
    }

    fn remove_from(&self, c: &mut Cache) {
        match self {
            Doc::Pool(o) => c.remove_pool(o.id),
            Doc::Server(o) => c.remove_server(o.id),
            Doc::Vm(o) => c.remove_vm(o.id),
            Doc::Repo(o) => {
                c.repos.remove(&o.id);
            }
            Doc::Network(o) => {
                c.networks.remove(&o.id);
            }
        }
    }
}

/// One change.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new object (the name check is the builder's).
    Create(Doc),
    /// A new version of an object read at `revision`.
    Update { old: Box<Versioned<Doc>>, new: Doc },
    /// Removal of an object read at `revision`.
    Delete(Versioned<Doc>),
}

impl Change {
    pub fn update<T>(old: &Versioned<T>, new: T, wrap: fn(T) -> Doc) -> Self
    where
        T: Clone,
    {
        Change::Update {
            old: Box::new(Versioned {
                revision: old.revision,
                value: wrap(old.value.clone()),
            }),
            new: wrap(new),
        }
    }

    pub fn delete<T: Clone>(old: &Versioned<T>, wrap: fn(T) -> Doc) -> Self {
        Change::Delete(Versioned {
            revision: old.revision,
            value: wrap(old.value.clone()),
        })
    }

    fn write_and_undo(&self) -> Result<(WriteOp, Undo)> {
        Ok(match self {
            Change::Create(d) => (
                WriteOp::Put {
                    kind: d.kind(),
                    id: d.key(),
                    expect: Expect::Absent,
                    data: d.document()?,
                },
                Undo::DeleteObject {
                    kind: d.kind().into(),
                    id: d.key(),
                },
            ),
            Change::Update { old, new } => (
                WriteOp::Put {
                    kind: new.kind(),
                    id: new.key(),
                    expect: Expect::Revision(old.revision),
                    data: new.document()?,
                },
                Undo::RestoreObject {
                    kind: old.value.kind().into(),
                    id: old.value.key(),
                    data: old.value.json()?,
                },
            ),
            Change::Delete(old) => (
                WriteOp::Delete {
                    kind: old.value.kind(),
                    id: old.value.key(),
                    expect: Expect::Revision(old.revision),
                },
                Undo::RestoreObject {
                    kind: old.value.kind().into(),
                    id: old.value.key(),
                    data: old.value.json()?,
                },
            ),
        })
    }
}

/// How often a change is rebuilt from fresh state after a conflict before giving up.
const CONFLICT_RETRIES: usize = 5;

impl Manager {
    /// Runs a job of one step, `record`, that applies the changes `build` makes from the
    /// index (rebuilt on a conflict) and then ends with `output`: the shape of every
    /// operation that only changes records.
    pub(crate) async fn record_job<T, F>(
        &self,
        kind: &str,
        description: String,
        target: (&str, String),
        output: T,
        build: F,
    ) -> Result<JobHandle<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnMut(&Cache) -> Result<Vec<Change>> + Send + 'static,
    {
        let job = JobSpec::new(
            kind,
            description,
            Some(target),
            self.initiator(),
            &["record"],
        );
        let mgr = self.clone();
        self.spawn(job, move |ctx| async move {
            ctx.step("record", mgr.apply(&ctx, "record", build)).await?;
            Ok(output)
        })
        .await
    }

    /// Builds changes from the current index, commits them with their undos as part of
    /// job step `step`, and updates the index. On a conflict (someone changed an object in
    /// between) the objects are reloaded and the changes rebuilt, a few times.
    pub(crate) async fn apply<F>(&self, ctx: &JobCtx, step: &str, mut build: F) -> Result<()>
    where
        F: FnMut(&Cache) -> Result<Vec<Change>>,
    {
        let mut attempt = 0;
        loop {
            let changes = build(&self.backends().cache_read())?;
            let mut writes = Vec::with_capacity(changes.len());
            let mut undos = Vec::with_capacity(changes.len());
            for c in &changes {
                let (w, u) = c.write_and_undo()?;
                writes.push(w);
                undos.push(u);
            }
            match ctx.commit(step, writes, undos, Vec::new()).await {
                Ok(revs) => {
                    let mut cache = self.backends().cache_write();
                    for (c, rev) in changes.into_iter().zip(revs) {
                        match c {
                            Change::Create(d) | Change::Update { new: d, .. } => {
                                d.put_into(&mut cache, rev)
                            }
                            Change::Delete(old) => old.value.remove_from(&mut cache),
                        }
                    }
                    return Ok(());
                }
                Err(Error::Conflict { kind, id, .. })
                    if kind != "job" && attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    self.backends().refresh(&kind, &id).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
