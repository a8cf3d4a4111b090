//! Names unique in the store, not in one process's memory: every named object has a
//! claim document (`name` kind, id `<kind>/<name>`) created with `Expect::Absent` in the
//! same commit as the object, and deleted with it. Of two processes creating the same
//! name, exactly one commit succeeds; the other gets `AlreadyExists` naming the object.

use serde::{Deserialize, Serialize};

use crate::model::{Assembly, Network, Repository, Server, ServerPool, Template, Undo, Vm};
use crate::store::{Document, Expect, Object, Store, StoreExt, WriteOp};
use crate::{Error, Result};

/// The store kind of name claims.
pub(crate) const NAME_KIND: &str = "name";

/// A claim on a name: which object of which kind holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NameClaim {
    /// The kind of the object (`vm`, `pool`, ...).
    pub kind: String,
    /// The name.
    pub name: String,
    /// The object's id.
    pub id: String,
}

impl NameClaim {
    pub fn new(kind: &str, name: &str, id: impl ToString) -> Self {
        NameClaim {
            kind: kind.into(),
            name: name.into(),
            id: id.to_string(),
        }
    }

    /// Its document id.
    pub fn key(&self) -> String {
        claim_key(&self.kind, &self.name)
    }

    fn document(&self) -> Result<Document> {
        Ok(serde_json::value::to_raw_value(self)?)
    }

    /// The write that takes the name (fails with a conflict if it is taken) and its undo.
    pub fn take(&self) -> Result<(WriteOp, Undo)> {
        Ok((
            WriteOp::Put {
                kind: NAME_KIND,
                id: self.key(),
                expect: Expect::Absent,
                data: self.document()?,
            },
            Undo::DeleteObject {
                kind: NAME_KIND.into(),
                id: self.key(),
            },
        ))
    }

    /// The write that gives the name up and its undo (taking it back).
    pub fn release(&self) -> Result<(WriteOp, Undo)> {
        Ok((
            WriteOp::Delete {
                kind: NAME_KIND,
                id: self.key(),
                expect: Expect::Any,
            },
            Undo::RestoreObject {
                kind: NAME_KIND.into(),
                id: self.key(),
                data: serde_json::to_value(self)?,
            },
        ))
    }
}

fn claim_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// The error for a conflict on a name claim: the name is taken.
pub(crate) fn taken(claim_id: &str) -> Error {
    let (kind, name) = claim_id.split_once('/').unwrap_or(("object", claim_id));
    Error::AlreadyExists {
        kind: static_kind(kind),
        id: name.to_string(),
    }
}

fn static_kind(kind: &str) -> &'static str {
    [
        ServerPool::KIND,
        Server::KIND,
        Vm::KIND,
        Repository::KIND,
        Network::KIND,
        Template::KIND,
        Assembly::KIND,
        HOST_CLAIM,
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("object")
}

/// The claim kind of physical hosts: one host is one server, whatever its name.
pub(crate) const HOST_CLAIM: &str = "host";

/// The marker that says a store's names are claimed (written once, by the first manager
/// of a version with claims to open it).
const MARKER: (&str, &str) = ("meta", "names");

/// Claims the names of every object in a store written before name claims existed, in one
/// commit with the marker. Objects that already share a name keep it unclaimed (logged:
/// rename one of them); only the first by id gets the claim.
pub(crate) async fn claim_existing(store: &dyn Store) -> Result<()> {
    if store.get(MARKER.0, MARKER.1).await?.is_some() {
        return Ok(());
    }
    let mut claims: Vec<NameClaim> = Vec::new();
    macro_rules! collect {
        ($t:ty, $($name:ident).+) => {
            for v in store.list_obj::<$t>().await? {
                claims.push(NameClaim::new(<$t>::KIND, &v.value.$($name).+, v.value.key()));
            }
        };
    }
    collect!(ServerPool, name);
    collect!(Server, name);
    collect!(Vm, spec.name);
    collect!(Repository, name);
    collect!(Network, name);
    collect!(Template, name);
    collect!(Assembly, name);
    claims.sort_by(|a, b| (a.key(), &a.id).cmp(&(b.key(), &b.id)));
    let mut writes = Vec::with_capacity(claims.len() + 1);
    let mut last: Option<String> = None;
    for c in &claims {
        if last.as_deref() == Some(c.key().as_str()) {
            tracing::warn!(
                "{} {} shares its name {:?} with another {}: rename one of them",
                c.kind,
                c.id,
                c.name,
                c.kind
            );
            continue;
        }
        last = Some(c.key());
        writes.push(c.take()?.0);
    }
    writes.push(WriteOp::Put {
        kind: MARKER.0,
        id: MARKER.1.into(),
        expect: Expect::Absent,
        data: serde_json::value::to_raw_value(&serde_json::json!({ "claimed": true }))?,
    });
    match store.commit(&writes, &[]).await {
        // Another manager claimed them first.
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn existing_objects_get_their_names_once() {
        let store = SqliteStore::in_memory().unwrap();
        let pool = |name: &str| ServerPool {
            id: crate::id::PoolId::new(),
            name: name.into(),
            servers: vec![],
            repositories: vec![],
            ha_enabled: false,
            policies: Default::default(),
            max_servers: 32,
        };
        for p in [pool("a"), pool("b"), pool("a")] {
            store.put_obj(&p, Expect::Absent).await.unwrap();
        }
        claim_existing(&store).await.unwrap();
        assert_eq!(store.list(NAME_KIND).await.unwrap().len(), 2);
        // A second run changes nothing.
        claim_existing(&store).await.unwrap();
        assert_eq!(store.list(NAME_KIND).await.unwrap().len(), 2);
        let err = store
            .commit(&[NameClaim::new("pool", "a", "x").take().unwrap().0], &[])
            .await
            .unwrap_err();
        let Error::Conflict { id, .. } = err else {
            panic!("{err}")
        };
        assert!(matches!(taken(&id), Error::AlreadyExists { kind: "pool", ref id } if id == "a"));
    }
}
