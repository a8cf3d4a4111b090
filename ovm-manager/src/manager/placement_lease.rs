//! Capacity across processes: a pool's placements are decided by one manager at a time.
//!
//! Placement reads the index's view of a pool; two processes placing from their own
//! views would each see the other's reservations too late and overcommit a server. So a
//! process places in a pool only while it holds the pool's *placement lease* (a store
//! document `lease/placement/<pool>` naming its manager instance). On taking it, the
//! process catches up with the change feed — every reservation the previous holder
//! committed is then in its view — and every reservation it commits carries a check that
//! it still holds the lease. It keeps the lease while it has placements in flight (a
//! burst costs one acquisition) and gives it up shortly after the last one is recorded.
//! The lease of a manager that is gone (its instance lease expired, or its process ended)
//! is taken over.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Inner, Manager};
use crate::id::{InstanceId, PoolId, Timestamp, VmId};
use crate::job::{HostIdentity, Liveness};
use crate::model::ManagerInstance;
use crate::store::{Expect, StoreExt, WriteOp};
use crate::{Error, Result};

/// The store kind of leases.
pub(super) const LEASE_KIND: &str = "lease";

/// How long a placement waits for another manager's lease before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle lease is kept in case more placements follow.
const LINGER: Duration = Duration::from_millis(20);

/// How long a busy process keeps the lease while another waits for it.
const MAX_HOLD: Duration = Duration::from_millis(100);

/// How long a process that handed the lease over leaves it to the waiter before asking
/// for it again.
const HAND_OVER: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PlacementLease {
    pool: PoolId,
    holder: InstanceId,
    taken_at: Timestamp,
}

fn lease_id(pool: PoolId) -> String {
    format!("placement/{pool}")
}

/// The document a manager waiting for a pool's lease leaves, so the holder hands over.
fn waiter_id(pool: PoolId) -> String {
    format!("placement-wait/{pool}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiter {
    waiter: InstanceId,
    since: Timestamp,
}

/// The placement leases this process holds.
#[derive(Default)]
pub(super) struct Held {
    pools: Mutex<HashMap<PoolId, HeldLease>>,
}

struct HeldLease {
    revision: u64,
    /// Placements decided and not yet recorded (or given up).
    in_flight: usize,
    /// When it was taken.
    taken: Instant,
    /// Being handed over: no new placement under it; released once none is in flight.
    draining: bool,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolId, HeldLease>> {
        lock(&self.pools)
    }

    /// The revision of the lease on `pool`, if held.
    pub fn revision(&self, pool: PoolId) -> Option<u64> {
        self.lock().get(&pool).map(|l| l.revision)
    }
}

/// One placement in flight under a lease; dropping it (recorded, failed or abandoned)
/// ends the VM's reservation in the index and lets the lease go once no other is left.
pub(super) struct Ticket {
    manager: Weak<Inner>,
    pool: PoolId,
    /// The VM placed (none for the ticket that holds the lease through a batch).
    vm: Option<VmId>,
    /// The revision of the lease the placement was decided under.
    lease_revision: Option<u64>,
}

impl Ticket {
    /// The check that goes into the reservation's commit: the lease the placement was
    /// decided under is still this process's, so no other process placed in the pool
    /// since from a view without this reservation.
    pub(super) fn lease_check(&self) -> Result<WriteOp> {
        let id = lease_id(self.pool);
        match self.lease_revision {
            Some(revision) => Ok(WriteOp::Check {
                kind: LEASE_KIND,
                id,
                expect: Expect::Revision(revision),
            }),
            None => Err(lease_lost(&id)),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(inner) = self.manager.upgrade() else {
            return;
        };
        if let Some(vm) = self.vm {
            inner.wiring.index_write().unreserve(vm);
        }
        let (idle, draining) = {
            let mut held = inner.placement_leases.lock();
            match held.get_mut(&self.pool) {
                Some(l) => {
                    l.in_flight = l.in_flight.saturating_sub(1);
                    (l.in_flight == 0, l.draining)
                }
                None => (false, false),
            }
        };
        if idle && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let mgr = Manager { inner };
            let pool = self.pool;
            rt.spawn(async move {
                if !draining {
                    tokio::time::sleep(LINGER).await;
                }
                mgr.release_placement_lease(pool).await;
            });
        }
    }
}

impl Manager {
    /// Makes sure this process holds the placement lease of `pool` (waiting for another
    /// live holder to give it up), and that the index has caught up with the store since
    /// it was taken. Called with the `placing` lock held.
    pub(super) async fn acquire_placement_lease(&self, pool: PoolId) -> Result<()> {
        if self.inner.placement_leases.revision(pool).is_some() {
            return Ok(());
        }
        let me = self.inner.jobs.owner().id();
        let here = HostIdentity::current();
        let started = Instant::now();
        let mut attempt = 0;
        let id = lease_id(pool);
        let mut waiting: Option<u64> = None;
        loop {
            let lease = PlacementLease {
                pool,
                holder: me,
                taken_at: Timestamp::now(),
            };
            let current = self.store().get(LEASE_KIND, &id).await?;
            let expect = match &current {
                None => Some(Expect::Absent),
                Some(r) => {
                    let other: PlacementLease = serde_json::from_str(r.data.get())
                        .map_err(|e| Error::backend("store", format!("lease {id}: {e}")))?;
                    let holder = self
                        .store()
                        .get_obj::<ManagerInstance>(&other.holder.to_string())
                        .await?
                        .map(|v| v.value);
                    let liveness = Liveness::of(holder.as_ref(), &here, Timestamp::now());
                    if other.holder == me || liveness.is_dead() {
                        Some(Expect::Revision(r.revision))
                    } else {
                        if waiting.is_none() {
                            waiting = Some(self.announce_waiting(pool, me).await?);
                        }
                        if started.elapsed() > ACQUIRE_TIMEOUT {
                            let who =
                                holder.map_or_else(|| other.holder.to_string(), |h| h.describe());
                            return Err(Error::Timeout {
                                what: format!("{who} to finish placing VMs in pool {pool}"),
                                after: ACQUIRE_TIMEOUT,
                            });
                        }
                        None
                    }
                }
            };
            if let Some(expect) = expect {
                let write = WriteOp::Put {
                    kind: LEASE_KIND,
                    id: id.clone(),
                    expect,
                    data: serde_json::value::to_raw_value(&lease)?,
                };
                match self.store().commit(&[write], &[]).await {
                    Ok(revs) => {
                        self.inner.placement_leases.lock().insert(
                            pool,
                            HeldLease {
                                revision: revs[0],
                                in_flight: 0,
                                taken: Instant::now(),
                                draining: false,
                            },
                        );
                        if let Some(rev) = waiting {
                            // Ours still (unless another waiter came since): take it back.
                            let _ = self
                                .store()
                                .commit(
                                    &[WriteOp::Delete {
                                        kind: LEASE_KIND,
                                        id: waiter_id(pool),
                                        expect: Expect::Revision(rev),
                                    }],
                                    &[],
                                )
                                .await;
                        }
                        // Everything the previous holder reserved is committed: see it.
                        return self.sync().await;
                    }
                    Err(Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            attempt += 1;
            tokio::time::sleep(super::change::backoff(attempt.min(5))).await;
        }
    }

    /// Leaves word that this process waits for the lease of `pool`; returns the revision.
    async fn announce_waiting(&self, pool: PoolId, me: InstanceId) -> Result<u64> {
        let w = Waiter {
            waiter: me,
            since: Timestamp::now(),
        };
        let write = WriteOp::Put {
            kind: LEASE_KIND,
            id: waiter_id(pool),
            expect: Expect::Any,
            data: serde_json::value::to_raw_value(&w)?,
        };
        Ok(self.store().commit(&[write], &[]).await?[0])
    }

    /// True if this process holds the lease of `pool`, has held it a while, and another
    /// manager waits for it: the lease then drains (no new placement under it) and is
    /// released once what is in flight is recorded. Called with `placing` held.
    pub(super) async fn should_hand_over(&self, pool: PoolId) -> bool {
        let (held_long, draining) = match self.inner.placement_leases.lock().get(&pool) {
            Some(l) => (l.taken.elapsed() > MAX_HOLD, l.draining),
            None => return false,
        };
        if draining {
            return true;
        }
        if !held_long {
            return false;
        }
        let me = self.inner.jobs.owner().id();
        let waiter = match self.store().get(LEASE_KIND, &waiter_id(pool)).await {
            Ok(Some(r)) => serde_json::from_str::<Waiter>(r.data.get()).ok(),
            _ => None,
        };
        if waiter.is_none_or(|w| w.waiter == me) {
            return false;
        }
        let idle = {
            let mut held = self.inner.placement_leases.lock();
            match held.get_mut(&pool) {
                Some(l) => {
                    l.draining = true;
                    l.in_flight == 0
                }
                None => false,
            }
        };
        if idle {
            // Nothing in flight: no ticket will release it, so do it now.
            let mgr = self.clone();
            tokio::spawn(async move { mgr.release_placement_lease(pool).await });
        }
        true
    }

    /// Puts placements back in the queue, to be placed once the lease is handed over and
    /// taken back.
    pub(super) fn defer_placements(&self, pending: Vec<super::PendingPlacement>) {
        lock(&self.inner.pending_placements).extend(pending);
    }

    /// A ticket for one placement (of `vm`, reserved in the index) decided under the
    /// lease of `pool`.
    pub(super) fn placement_ticket(&self, pool: PoolId, vm: Option<VmId>) -> Ticket {
        let lease_revision = self.inner.placement_leases.lock().get_mut(&pool).map(|l| {
            l.in_flight += 1;
            l.revision
        });
        Ticket {
            manager: Arc::downgrade(&self.inner),
            pool,
            vm,
            lease_revision,
        }
    }

    /// Gives up the lease of `pool` if no placement is in flight there. Placements that
    /// waited for a hand-over are placed again after a pause that lets the waiter in.
    async fn release_placement_lease(&self, pool: PoolId) {
        let serial = self.inner.placing.lock().await;
        let (revision, handed_over) = {
            let mut held = self.inner.placement_leases.lock();
            match held.get(&pool) {
                Some(l) if l.in_flight == 0 => {
                    let r = (l.revision, l.draining);
                    held.remove(&pool);
                    r
                }
                _ => return,
            }
        };
        let delete = WriteOp::Delete {
            kind: LEASE_KIND,
            id: lease_id(pool),
            expect: Expect::Revision(revision),
        };
        match self.store().commit(&[delete], &[]).await {
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%pool, "cannot give up the placement lease: {e}"),
        }
        drop(serial);
        let waiting = !lock(&self.inner.pending_placements).is_empty();
        if handed_over && waiting {
            self.place_after_hand_over().await;
        }
    }

    /// Places what waited for a hand-over, once the waiter has had its turn. (A boxed
    /// future of a named type: placing may hand over again, which releases again.)
    fn place_after_hand_over(&self) -> futures::future::BoxFuture<'static, ()> {
        let mgr = self.clone();
        Box::pin(async move {
            tokio::time::sleep(HAND_OVER).await;
            mgr.place_pending().await;
        })
    }
}

/// The error for a commit whose lease (`lease/<id>`) was taken over meanwhile.
pub(super) fn lease_lost(id: &str) -> Error {
    Error::Aborted {
        what: format!(
            "lease {id}: another manager took it over from this process (it had stopped responding)"
        ),
    }
}
