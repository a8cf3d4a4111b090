//! The manager's in-memory index of what the store holds, kept in step with every commit
//! this process makes, and a ready `PoolView` per pool so placement needs no store reads.
//!
//! The store stays the authority: writes carry the cached revision, so a change made by
//! another process surfaces as `Error::Conflict` and the entry is reloaded.

use std::collections::HashMap;

use crate::id::{NetworkId, PoolId, RepoId, ServerId, VmId};
use crate::model::{Network, Repository, Server, ServerPool, Vm, VmState};
use crate::policy::{PoolView, ServerView, VmView};
use crate::store::Versioned;

use super::refs::{NetworkRef, PoolRef, Ref, RepoRef, ServerRef, VmRef};

/// A pool's view with positions for O(1) updates.
#[derive(Debug, Default, Clone)]
struct PoolIndex {
    view: PoolView,
    server_pos: HashMap<ServerId, usize>,
    vm_pos: HashMap<VmId, usize>,
}

impl PoolIndex {
    fn upsert_server(&mut self, sv: ServerView) {
        match self.server_pos.get(&sv.id) {
            Some(&i) => self.view.servers[i] = sv,
            None => {
                self.server_pos.insert(sv.id, self.view.servers.len());
                self.view.servers.push(sv);
            }
        }
    }

    fn remove_server(&mut self, id: ServerId) {
        if let Some(i) = self.server_pos.remove(&id) {
            self.view.servers.swap_remove(i);
            if let Some(moved) = self.view.servers.get(i) {
                self.server_pos.insert(moved.id, i);
            }
        }
    }

    fn upsert_vm(&mut self, vv: VmView) {
        match self.vm_pos.get(&vv.id) {
            Some(&i) => self.view.vms[i] = vv,
            None => {
                self.vm_pos.insert(vv.id, self.view.vms.len());
                self.view.vms.push(vv);
            }
        }
    }

    fn remove_vm(&mut self, id: VmId) {
        if let Some(i) = self.vm_pos.remove(&id) {
            self.view.vms.swap_remove(i);
            if let Some(moved) = self.view.vms.get(i) {
                self.vm_pos.insert(moved.id, i);
            }
        }
    }
}

/// Everything the manager knows, by id.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub pools: HashMap<PoolId, Versioned<ServerPool>>,
    pub servers: HashMap<ServerId, Versioned<Server>>,
    pub vms: HashMap<VmId, Versioned<Vm>>,
    pub repos: HashMap<RepoId, Versioned<Repository>>,
    pub networks: HashMap<NetworkId, Versioned<Network>>,
    views: HashMap<PoolId, PoolIndex>,
    /// VM names (unique) to ids: name lookups and the uniqueness check at create.
    vm_names: HashMap<String, VmId>,
    /// Placements decided and not yet recorded: the VM occupies the server in its pool's
    /// view whatever its record says meanwhile (the record may be written again by
    /// anyone, or seen again in the change feed, before the reservation is committed).
    reserved: HashMap<VmId, ServerId>,
}

fn server_view(s: &Server, repos: &[RepoId]) -> ServerView {
    ServerView {
        id: s.id,
        name: s.name.clone(),
        state: s.state,
        cpus: s.cpus,
        memory_mib: s.memory_mib,
        networks: s.networks.clone(),
        repositories: repos.iter().copied().collect(),
        net_util: 0.0,
    }
}

fn vm_view(vm: &Vm, pool_ha: bool) -> VmView {
    // Only a VM that holds resources occupies its server.
    let server = vm.server.filter(|_| vm.state.is_active());
    let mut v = VmView::new(vm.id, server, vm.spec.vcpus, vm.spec.memory_mib);
    v.ha = pool_ha && vm.spec.ha_enabled;
    v.affinity_group = vm.spec.affinity_group.clone();
    v.anti_affinity_group = vm.spec.anti_affinity_group.clone();
    v.last_moved = vm.last_moved;
    v.preferred = vm.spec.preferred_servers.clone();
    v.mode = vm.spec.preferred_mode;
    v.networks = vm.spec.nics.iter().map(|n| n.network).collect();
    // A VM in transition belongs to the job moving it.
    v.pinned = matches!(
        vm.state,
        VmState::Starting | VmState::Stopping | VmState::Migrating
    );
    v
}

/// Shortest id prefix accepted (as git: shorter ones match too much by chance).
pub const MIN_ID_PREFIX: usize = 4;

/// Looks up `key` as an id or exact name (`exact`, given the key in normal form), else as
/// a unique prefix of an id. An ambiguous prefix is refused, saying how many it matches.
pub fn resolve<'a, I, T>(
    kind: &'static str,
    key: &str,
    by_id: &'a HashMap<I, Versioned<T>>,
    exact: impl Fn(&str) -> Option<&'a Versioned<T>>,
) -> crate::Result<&'a Versioned<T>>
where
    I: std::fmt::Display,
{
    use unicode_normalization::UnicodeNormalization;
    let normal: String = key.nfc().collect();
    if let Some(v) = exact(&normal) {
        return Ok(v);
    }
    let prefix = key.to_ascii_lowercase();
    let looks_like_id = prefix.len() >= MIN_ID_PREFIX
        && prefix.len() < 36
        && prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if looks_like_id {
        let mut found = by_id
            .iter()
            .filter(|(id, _)| id.to_string().starts_with(&prefix))
            .map(|(_, v)| v);
        if let Some(first) = found.next() {
            let more = found.count();
            if more == 0 {
                return Ok(first);
            }
            return Err(crate::Error::invalid(
                format!("{kind} id"),
                format!(
                    "{key:?} is the start of {} {kind} ids; give more of it",
                    more + 1
                ),
            ));
        }
    }
    Err(crate::Error::not_found(kind, key))
}

/// True if the index already holds a later revision than `revision` (revisions never
/// repeat, even across a delete, so the higher one is the newer).
fn newer<T>(held: Option<&Versioned<T>>, revision: u64) -> bool {
    held.is_some_and(|h| h.revision > revision)
}

impl Index {
    pub fn put_pool(&mut self, p: Versioned<ServerPool>) {
        if newer(self.pools.get(&p.value.id), p.revision) {
            return;
        }
        let idx = self.views.entry(p.value.id).or_default();
        idx.view.policies = p.value.policies.clone();
        idx.view.ha_enabled = p.value.ha_enabled;
        let repos = p.value.repositories.clone();
        let id = p.value.id;
        let changed_repos = self
            .pools
            .get(&id)
            .is_none_or(|old| old.value.repositories != repos);
        self.pools.insert(id, p);
        if changed_repos {
            let members: Vec<Server> = self
                .servers
                .values()
                .filter(|s| s.value.pool == Some(id))
                .map(|s| s.value.clone())
                .collect();
            if let Some(idx) = self.views.get_mut(&id) {
                for s in &members {
                    idx.upsert_server(server_view(s, &repos));
                }
            }
        }
    }

    pub fn remove_pool(&mut self, id: PoolId) {
        self.pools.remove(&id);
        self.views.remove(&id);
    }

    pub fn put_server(&mut self, s: Versioned<Server>) {
        if newer(self.servers.get(&s.value.id), s.revision) {
            return;
        }
        if let Some(old) = self.servers.get(&s.value.id)
            && old.value.pool != s.value.pool
            && let Some(p) = old.value.pool
            && let Some(idx) = self.views.get_mut(&p)
        {
            idx.remove_server(s.value.id);
        }
        if let Some(pool) = s.value.pool {
            let repos = self
                .pools
                .get(&pool)
                .map(|p| p.value.repositories.clone())
                .unwrap_or_default();
            self.views
                .entry(pool)
                .or_default()
                .upsert_server(server_view(&s.value, &repos));
        }
        self.servers.insert(s.value.id, s);
    }

    pub fn remove_server(&mut self, id: ServerId) {
        if let Some(old) = self.servers.remove(&id)
            && let Some(p) = old.value.pool
            && let Some(idx) = self.views.get_mut(&p)
        {
            idx.remove_server(id);
        }
    }

    pub fn put_vm(&mut self, v: Versioned<Vm>) {
        if newer(self.vms.get(&v.value.id), v.revision) {
            return;
        }
        if let Some(old) = self.vms.get(&v.value.id)
            && old.value.pool != v.value.pool
            && let Some(idx) = self.views.get_mut(&old.value.pool)
        {
            idx.remove_vm(v.value.id);
        }
        self.unname_vm(v.value.id);
        self.vm_names.insert(v.value.spec.name.clone(), v.value.id);
        let ha = self
            .pools
            .get(&v.value.pool)
            .is_some_and(|p| p.value.ha_enabled);
        let mut vv = vm_view(&v.value, ha);
        if let Some(server) = self.reserved.get(&v.value.id) {
            vv.server = Some(*server);
            vv.pinned = true;
        }
        self.views.entry(v.value.pool).or_default().upsert_vm(vv);
        self.vms.insert(v.value.id, v);
    }

    pub fn remove_vm(&mut self, id: VmId) {
        self.reserved.remove(&id);
        self.unname_vm(id);
        if let Some(old) = self.vms.remove(&id)
            && let Some(idx) = self.views.get_mut(&old.value.pool)
        {
            idx.remove_vm(id);
        }
    }

    /// Drops the name entry of a VM (before a rename or removal).
    fn unname_vm(&mut self, id: VmId) {
        if let Some(old) = self.vms.get(&id)
            && self.vm_names.get(&old.value.spec.name) == Some(&id)
        {
            self.vm_names.remove(&old.value.spec.name);
        }
    }

    pub fn put_repo(&mut self, r: Versioned<Repository>) {
        if !newer(self.repos.get(&r.value.id), r.revision) {
            self.repos.insert(r.value.id, r);
        }
    }

    pub fn put_network(&mut self, n: Versioned<Network>) {
        if !newer(self.networks.get(&n.value.id), n.revision) {
            self.networks.insert(n.value.id, n);
        }
    }

    /// Removes an object deleted at `revision`, unless the index holds a later one.
    pub fn remove_if_older(&mut self, kind: &str, id: &str, revision: u64) {
        fn gone<T>(held: Option<&Versioned<T>>, revision: u64) -> bool {
            held.is_some_and(|h| h.revision < revision)
        }
        match kind {
            "pool" => {
                if let Ok(id) = id.parse()
                    && gone(self.pools.get(&id), revision)
                {
                    self.remove_pool(id);
                }
            }
            "server" => {
                if let Ok(id) = id.parse()
                    && gone(self.servers.get(&id), revision)
                {
                    self.remove_server(id);
                }
            }
            "vm" => {
                if let Ok(id) = id.parse()
                    && gone(self.vms.get(&id), revision)
                {
                    self.remove_vm(id);
                }
            }
            "repository" => {
                if let Ok(id) = id.parse()
                    && gone(self.repos.get(&id), revision)
                {
                    self.repos.remove(&id);
                }
            }
            "network" => {
                if let Ok(id) = id.parse()
                    && gone(self.networks.get(&id), revision)
                {
                    self.networks.remove(&id);
                }
            }
            _ => {}
        }
    }

    /// The pool's view as placement sees it.
    pub fn view(&self, pool: PoolId) -> Option<&PoolView> {
        self.views.get(&pool).map(|i| &i.view)
    }

    /// Marks a VM as occupying `server` in its pool's view before it is recorded there (a
    /// reservation), so that the next placements see it, until [`Index::unreserve`].
    pub fn reserve(&mut self, vm: VmId, server: ServerId) {
        let Some(v) = self.vms.get(&vm).cloned() else {
            return;
        };
        self.reserved.insert(vm, server);
        self.reindex_vm(v);
    }

    /// Ends a reservation: the VM occupies what its record says (the reservation once it
    /// is committed, nothing if it was not).
    pub fn unreserve(&mut self, vm: VmId) {
        if self.reserved.remove(&vm).is_some()
            && let Some(v) = self.vms.get(&vm).cloned()
        {
            self.reindex_vm(v);
        }
    }

    fn reindex_vm(&mut self, v: Versioned<Vm>) {
        self.vms.remove(&v.value.id);
        self.put_vm(v);
    }

    /// A pool by id, or `NotFound` (for changes that must see the object still there).
    pub fn pool(&self, id: PoolId) -> crate::Result<&Versioned<ServerPool>> {
        self.pools
            .get(&id)
            .ok_or_else(|| crate::Error::not_found("pool", id))
    }

    /// A server by id, or `NotFound`.
    pub fn server(&self, id: ServerId) -> crate::Result<&Versioned<Server>> {
        self.servers
            .get(&id)
            .ok_or_else(|| crate::Error::not_found("server", id))
    }

    /// A VM by id, or `NotFound`.
    pub fn vm(&self, id: VmId) -> crate::Result<&Versioned<Vm>> {
        self.vms
            .get(&id)
            .ok_or_else(|| crate::Error::not_found("vm", id))
    }

    /// A VM by id, or as a user names it.
    pub fn vm_ref(&self, r: &VmRef) -> crate::Result<&Versioned<Vm>> {
        match r {
            Ref::Id(id) => self.vm(*id),
            Ref::Key(key) => self.resolve_vm(key),
        }
    }

    /// A server by id, or as a user names it.
    pub fn server_ref(&self, r: &ServerRef) -> crate::Result<&Versioned<Server>> {
        match r {
            Ref::Id(id) => self.server(*id),
            Ref::Key(key) => self.resolve_server(key),
        }
    }

    /// A pool by id, or as a user names it.
    pub fn pool_ref(&self, r: &PoolRef) -> crate::Result<&Versioned<ServerPool>> {
        match r {
            Ref::Id(id) => self.pool(*id),
            Ref::Key(key) => self.resolve_pool(key),
        }
    }

    /// A repository by id, or as a user names it.
    pub fn repo_ref(&self, r: &RepoRef) -> crate::Result<&Versioned<Repository>> {
        match r {
            Ref::Id(id) => self
                .repos
                .get(id)
                .ok_or_else(|| crate::Error::not_found("repository", id)),
            Ref::Key(key) => self.resolve_repo(key),
        }
    }

    /// A network by id, or as a user names it.
    pub fn network_ref(&self, r: &NetworkRef) -> crate::Result<&Versioned<Network>> {
        match r {
            Ref::Id(id) => self
                .networks
                .get(id)
                .ok_or_else(|| crate::Error::not_found("network", id)),
            Ref::Key(key) => self.resolve_network(key),
        }
    }

    /// A VM as a user names it: id, name or unique id prefix.
    pub fn resolve_vm(&self, key: &str) -> crate::Result<&Versioned<Vm>> {
        resolve("vm", key, &self.vms, |n| self.find_vm(n))
    }

    /// A server as a user names it: id, name or unique id prefix.
    pub fn resolve_server(&self, key: &str) -> crate::Result<&Versioned<Server>> {
        resolve("server", key, &self.servers, |n| self.find_server(n))
    }

    /// A pool as a user names it: id, name or unique id prefix.
    pub fn resolve_pool(&self, key: &str) -> crate::Result<&Versioned<ServerPool>> {
        resolve("pool", key, &self.pools, |n| self.find_pool(n))
    }

    /// A repository as a user names it: id, name or unique id prefix.
    pub fn resolve_repo(&self, key: &str) -> crate::Result<&Versioned<Repository>> {
        resolve("repository", key, &self.repos, |n| self.find_repo(n))
    }

    /// A network as a user names it: id, name or unique id prefix.
    pub fn resolve_network(&self, key: &str) -> crate::Result<&Versioned<Network>> {
        resolve("network", key, &self.networks, |n| self.find_network(n))
    }

    /// Finds an object by id string or by exact name.
    pub fn find_vm(&self, key: &str) -> Option<&Versioned<Vm>> {
        if let Ok(id) = key.parse::<VmId>() {
            return self.vms.get(&id);
        }
        self.vm_names.get(key).and_then(|id| self.vms.get(id))
    }

    pub fn find_server(&self, key: &str) -> Option<&Versioned<Server>> {
        if let Ok(id) = key.parse::<ServerId>() {
            return self.servers.get(&id);
        }
        self.servers.values().find(|v| v.value.name == key)
    }

    pub fn find_pool(&self, key: &str) -> Option<&Versioned<ServerPool>> {
        if let Ok(id) = key.parse::<PoolId>() {
            return self.pools.get(&id);
        }
        self.pools.values().find(|v| v.value.name == key)
    }

    pub fn find_repo(&self, key: &str) -> Option<&Versioned<Repository>> {
        if let Ok(id) = key.parse::<RepoId>() {
            return self.repos.get(&id);
        }
        self.repos.values().find(|v| v.value.name == key)
    }

    pub fn find_network(&self, key: &str) -> Option<&Versioned<Network>> {
        if let Ok(id) = key.parse::<NetworkId>() {
            return self.networks.get(&id);
        }
        self.networks.values().find(|v| v.value.name == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmSpec;

    fn placed(c: &Index, pool: PoolId, vm: VmId) -> Option<ServerId> {
        c.view(pool)?.vms.iter().find(|v| v.id == vm)?.server
    }

    /// A reservation holds until it ends, whatever the VM's record does meanwhile: seen
    /// again in the change feed at the same revision, or written again by someone else.
    /// (When either dropped it, two processes filled the last slot of a server.)
    #[test]
    fn a_reservation_survives_its_record_until_it_ends() {
        let (pool, server, vm) = (PoolId::new(), ServerId::new(), VmId::new());
        let record = Vm {
            id: vm,
            pool,
            spec: VmSpec::new("v", 1, 64),
            state: VmState::Stopped,
            server: None,
            last_moved: None,
        };
        let mut c = Index::default();
        c.put_vm(Versioned {
            revision: 3,
            value: record.clone(),
        });
        c.reserve(vm, server);
        assert_eq!(placed(&c, pool, vm), Some(server));
        for revision in [3, 4] {
            c.put_vm(Versioned {
                revision,
                value: record.clone(),
            });
            assert_eq!(placed(&c, pool, vm), Some(server), "revision {revision}");
        }
        c.unreserve(vm);
        assert_eq!(
            placed(&c, pool, vm),
            None,
            "not recorded: the slot is free again"
        );
        c.reserve(vm, server);
        c.put_vm(Versioned {
            revision: 5,
            value: Vm {
                state: VmState::Starting,
                server: Some(server),
                ..record
            },
        });
        c.unreserve(vm);
        assert_eq!(placed(&c, pool, vm), Some(server), "recorded: it stays");
    }
}
