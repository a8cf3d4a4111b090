//! `ovm store check` / `repair`: documents that cannot be read as what they are, found
//! and moved out of the way. Listings already skip them (each skip is logged); these
//! name them, and repair quarantines them so that nothing trips over them again.

use super::Manager;
use crate::Result;
use crate::model::{
    Assembly, Job, ManagerInstance, Network, Outcome, Repository, Server, ServerPool, Template, Vm,
    Volume,
};
use crate::store::{Damaged, Object, decode};

impl Manager {
    /// Every damaged document: not JSON, or JSON that is not a valid object of its kind.
    pub async fn check_store(&self) -> Result<Vec<Damaged>> {
        let mut found = self.store().damaged().await?;
        macro_rules! typed {
            ($($t:ty),*) => {$(
                for r in self.store().list(<$t>::KIND).await? {
                    let (kind, id) = (r.kind.clone(), r.id.clone());
                    if let Err(e) = decode::<$t>(r) {
                        found.push(Damaged { kind, id, reason: e.to_string() });
                    }
                }
            )*};
        }
        typed!(
            ServerPool,
            Server,
            Vm,
            Repository,
            Volume,
            Network,
            Template,
            Assembly,
            Job,
            ManagerInstance
        );
        found.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        found.dedup_by(|a, b| a.kind == b.kind && a.id == b.id);
        Ok(found)
    }

    /// Quarantines every damaged document (recording an event for each); returns them.
    pub async fn repair_store(&self) -> Result<Vec<Damaged>> {
        let damaged = self.check_store().await?;
        let claims = self.store().list(super::names::NAME_KIND).await?;
        for d in &damaged {
            // The names it held are free again.
            for c in &claims {
                let claim: Option<super::names::NameClaim> =
                    serde_json::from_str(c.data.get()).ok();
                if claim.is_some_and(|n| n.kind == d.kind && n.id == d.id) {
                    let release = crate::store::WriteOp::Delete {
                        kind: super::names::NAME_KIND,
                        id: c.id.clone(),
                        expect: crate::store::Expect::Revision(c.revision),
                    };
                    self.store().commit(&[release], &[]).await?;
                }
            }
            if self.store().quarantine(&d.kind, &d.id, &d.reason).await? {
                self.log_event(
                    &d.kind,
                    d.id.clone(),
                    "store.quarantine",
                    Outcome::Info,
                    format!("moved to the store's quarantine: {}", d.reason),
                )
                .await?;
            }
        }
        if !damaged.is_empty() {
            self.load().await?;
        }
        Ok(damaged)
    }
}
