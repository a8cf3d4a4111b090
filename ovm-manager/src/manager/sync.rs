//! Following the store: the index catches up with what other processes commit, through
//! the store's change feed. On open the index is loaded whole; afterwards every change of
//! an indexed kind after the last one seen is applied in order — before a placement, after
//! a conflict, and every `sync_interval` in the background — so a long-lived manager (a
//! Python program, a service) shows what the CLI did a moment ago.

use std::sync::atomic::Ordering;

use super::Manager;
use super::index::Index;
use crate::Result;
use crate::model::{Network, Repository, Server, ServerPool, Vm};
use crate::store::{FeedEntry, Object, Record, StoreExt, Versioned, decode};

/// The kinds the index holds.
pub(super) const INDEXED: &[&str] = &[
    ServerPool::KIND,
    Server::KIND,
    Vm::KIND,
    Repository::KIND,
    Network::KIND,
];

/// Feed entries read per round trip.
const PAGE: usize = 2048;

impl Manager {
    /// Brings the index up to date with everything committed to the store so far (by any
    /// process). Cheap when nothing changed: one indexed query.
    pub async fn refresh(&self) -> Result<()> {
        self.sync().await
    }

    pub(crate) async fn sync(&self) -> Result<()> {
        let _one = self.inner.syncing.lock().await;
        let mut since = self.inner.seen_seq.load(Ordering::SeqCst);
        loop {
            let page = self.store().changes(INDEXED, since, PAGE).await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            {
                let mut index = self.wiring().index_write();
                for e in page.iter() {
                    apply(&mut index, e);
                }
            }
            since = last;
            self.inner.seen_seq.store(since, Ordering::SeqCst);
            if page.len() < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// (Re)loads the whole index from the store. The feed position is taken first, so a
    /// change committed while loading is applied again by the next sync (harmless: the
    /// index keeps the newest revision).
    pub(super) async fn load(&self) -> Result<()> {
        let store = self.store();
        let head = store.head().await?;
        let pools = store.list_obj::<ServerPool>().await?;
        let servers = store.list_obj::<Server>().await?;
        let vms = store.list_obj::<Vm>().await?;
        let repos = store.list_obj::<Repository>().await?;
        let nets = store.list_obj::<Network>().await?;
        let mut c = Index::default();
        pools.into_iter().for_each(|p| c.put_pool(p));
        servers.into_iter().for_each(|s| c.put_server(s));
        vms.into_iter().for_each(|v| c.put_vm(v));
        repos.into_iter().for_each(|r| c.put_repo(r));
        nets.into_iter().for_each(|n| c.put_network(n));
        *self.wiring().index_write() = c;
        self.inner.seen_seq.store(head, Ordering::SeqCst);
        Ok(())
    }
}

/// Applies one feed entry to the index: a newer revision replaces what it holds, a delete
/// newer than what it holds removes it.
fn apply(c: &mut Index, e: &FeedEntry) {
    let Some(data) = &e.data else {
        c.remove_if_older(&e.kind, &e.id, e.revision);
        return;
    };
    let record = Record {
        kind: e.kind.clone(),
        id: e.id.clone(),
        revision: e.revision,
        data: data.clone(),
    };
    fn typed<T: Object>(r: Record) -> Option<Versioned<T>> {
        decode(r)
            .map_err(|err| tracing::warn!("change feed: {err}"))
            .ok()
    }
    match e.kind.as_str() {
        k if k == ServerPool::KIND => typed(record).into_iter().for_each(|v| c.put_pool(v)),
        k if k == Server::KIND => typed(record).into_iter().for_each(|v| c.put_server(v)),
        k if k == Vm::KIND => typed(record).into_iter().for_each(|v| c.put_vm(v)),
        k if k == Repository::KIND => typed(record).into_iter().for_each(|v| c.put_repo(v)),
        k if k == Network::KIND => typed(record).into_iter().for_each(|v| c.put_network(v)),
        _ => {}
    }
}
