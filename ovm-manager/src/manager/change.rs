//! Changes to stored objects made by jobs: committed atomically with their undos and the
//! job record, then reflected in the index.

use super::Manager;
use super::index::Index;
use super::names::{NAME_KIND, NameClaim, taken};
use super::placement_lease::{LEASE_KIND, lease_lost};
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

    /// Its name, which it holds a claim on.
    fn name(&self) -> &str {
        match self {
            Doc::Pool(o) => &o.name,
            Doc::Server(o) => &o.name,
            Doc::Vm(o) => &o.spec.name,
            Doc::Repo(o) => &o.name,
            Doc::Network(o) => &o.name,
        }
    }

    fn claim(&self) -> NameClaim {
        NameClaim::new(self.kind(), self.name(), self.key())
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

    fn put_into(self, c: &mut Index, revision: u64) {
        match self {
            Doc::Pool(value) => c.put_pool(Versioned { revision, value }),
            Doc::Server(value) => c.put_server(Versioned { revision, value }),
            Doc::Vm(value) => c.put_vm(Versioned { revision, value }),
            Doc::Repo(value) => c.put_repo(Versioned { revision, value }),
            Doc::Network(value) => c.put_network(Versioned { revision, value }),
        }
    }

    fn remove_from(&self, c: &mut Index) {
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
    /// No change, but the commit must find a document as this check expects (a lease).
    Assert(WriteOp),
    /// Take a claim that is not an object's name (a physical host, say).
    Claim(NameClaim),
    /// Give up such a claim.
    Release(NameClaim),
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

    /// The name claims this change takes and gives up, with their undos.
    fn name_writes(&self) -> Result<Vec<(WriteOp, Undo)>> {
        Ok(match self {
            Change::Create(d) => vec![d.claim().take()?],
            Change::Delete(old) => vec![old.value.claim().release()?],
            Change::Update { old, new } if old.value.name() != new.name() => {
                vec![old.value.claim().release()?, new.claim().take()?]
            }
            Change::Update { .. } | Change::Assert(_) | Change::Claim(_) | Change::Release(_) => {
                Vec::new()
            }
        })
    }

    fn write_and_undo(&self) -> Result<(WriteOp, Option<Undo>)> {
        Ok(match self {
            Change::Assert(check) => (check.clone(), None),
            Change::Claim(c) => {
                let (w, u) = c.take()?;
                (w, Some(u))
            }
            Change::Release(c) => {
                let (w, u) = c.release()?;
                (w, Some(u))
            }
            Change::Create(d) => (
                WriteOp::Put {
                    kind: d.kind(),
                    id: d.key(),
                    expect: Expect::Absent,
                    data: d.document()?,
                },
                Some(Undo::DeleteObject {
                    kind: d.kind().into(),
                    id: d.key(),
                }),
            ),
            Change::Update { old, new } => (
                WriteOp::Put {
                    kind: new.kind(),
                    id: new.key(),
                    expect: Expect::Revision(old.revision),
                    data: new.document()?,
                },
                Some(Undo::RestoreObject {
                    kind: old.value.kind().into(),
                    id: old.value.key(),
                    data: old.value.json()?,
                }),
            ),
            Change::Delete(old) => (
                WriteOp::Delete {
                    kind: old.value.kind(),
                    id: old.value.key(),
                    expect: Expect::Revision(old.revision),
                },
                Some(Undo::RestoreObject {
                    kind: old.value.kind().into(),
                    id: old.value.key(),
                    data: old.value.json()?,
                }),
            ),
        })
    }
}

/// How often a change is rebuilt from fresh state after a conflict before giving up.
const CONFLICT_RETRIES: usize = 8;

/// The pause before retry `attempt` (1, 2, ...): 1, 2, 4 ... ms up to 64, with jitter.
pub(crate) fn backoff(attempt: usize) -> std::time::Duration {
    let base = 1u64 << attempt.saturating_sub(1).min(6);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % (base + 1);
    std::time::Duration::from_millis(base + jitter)
}

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
        F: FnMut(&Index) -> Result<Vec<Change>> + Send + 'static,
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
        F: FnMut(&Index) -> Result<Vec<Change>>,
    {
        let mut attempt = 0;
        loop {
            let changes = build(&self.wiring().index_read())?;
            // The objects' writes first (their revisions come back in this order), then
            // the name claims that go with them.
            let mut writes = Vec::with_capacity(changes.len());
            let mut undos = Vec::with_capacity(changes.len());
            let mut claims = Vec::new();
            for c in &changes {
                let (w, u) = c.write_and_undo()?;
                writes.push(w);
                undos.extend(u);
                claims.extend(c.name_writes()?);
            }
            for (w, u) in claims {
                writes.push(w);
                undos.push(u);
            }
            match ctx.commit(step, writes, undos, Vec::new()).await {
                Ok(revs) => {
                    let mut index = self.wiring().index_write();
                    for (c, rev) in changes.into_iter().zip(revs) {
                        match c {
                            Change::Create(d) | Change::Update { new: d, .. } => {
                                d.put_into(&mut index, rev)
                            }
                            Change::Delete(old) => old.value.remove_from(&mut index),
                            Change::Assert(_) | Change::Claim(_) | Change::Release(_) => {}
                        }
                    }
                    return Ok(());
                }
                Err(Error::Conflict { kind, id, .. }) if kind == NAME_KIND => {
                    return Err(taken(&id));
                }
                Err(Error::Conflict { kind, id, .. }) if kind == LEASE_KIND => {
                    return Err(lease_lost(&id));
                }
                Err(Error::Conflict { kind, id, .. })
                    if kind != "job" && attempt < CONFLICT_RETRIES =>
                {
                    // Someone else changed it first: catch up with what they committed
                    // and build the change again, after a short, growing, jittered pause
                    // (racers that retry in lockstep collide again).
                    attempt += 1;
                    self.sync().await?;
                    self.wiring().refresh(&kind, &id).await?;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
