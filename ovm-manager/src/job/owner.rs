//! Job ownership: every process that runs jobs holds a lease in the store (a
//! [`ManagerInstance`] record it renews), and every job names its owner. Recovery rolls
//! back only the jobs whose owner is gone — its lease expired, or its process provably
//! ended on this host — never those of a live process.
//!
//! A process that cannot renew in time (stopped, starved, cut off from the store) must
//! assume its jobs are being taken over: [`OwnerLease::check`] fails from half the lease
//! time on, and the job context checks it before each step and each backend action, so
//! a process that wakes from a `SIGSTOP` does not act on what another has rolled back.

use ovm_core::sync::lock;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::id::{InstanceId, Timestamp};
use crate::model::ManagerInstance;
use crate::store::{Expect, Store, StoreExt, Versioned, WriteOp};
use crate::{Error, Result};

/// Default lease time of a manager instance.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// This process's lease.
pub struct OwnerLease {
    store: Arc<dyn Store>,
    ttl: Duration,
    state: Mutex<LeaseState>,
    lost: AtomicBool,
}

struct LeaseState {
    record: Versioned<ManagerInstance>,
    /// Monotonic time at which the last successful renewal began.
    renewed: Instant,
}

impl std::fmt::Debug for OwnerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerLease")
            .field("id", &self.id())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl OwnerLease {
    /// Registers this process as a manager instance in `store`.
    pub async fn register(
        store: Arc<dyn Store>,
        ttl: Duration,
        initiator: &str,
    ) -> Result<Arc<Self>> {
        if ttl < Duration::from_millis(200) {
            return Err(Error::invalid(
                "manager.lease_ttl",
                "must be at least 200 ms",
            ));
        }
        let here = HostIdentity::current();
        let pid = std::process::id();
        let now = Timestamp::now();
        let record = ManagerInstance {
            id: InstanceId::new(),
            initiator: initiator.to_string(),
            pid,
            process_start: process_start(pid).unwrap_or(0),
            host: here.host,
            boot_id: here.boot_id,
            started_at: now,
            renewed_at: now,
            ttl_ms: ttl.as_millis() as u64,
        };
        let began = Instant::now();
        let revision = store.put_obj(&record, Expect::Absent).await?;
        Ok(Arc::new(OwnerLease {
            store,
            ttl,
            state: Mutex::new(LeaseState {
                record: Versioned {
                    revision,
                    value: record,
                },
                renewed: began,
            }),
            lost: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        lock(&self.state)
    }

    /// This instance's id.
    pub fn id(&self) -> InstanceId {
        self.lock().record.value.id
    }

    /// This instance's record.
    pub fn record(&self) -> ManagerInstance {
        self.lock().record.value.clone()
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the lease should be renewed.
    pub fn renew_period(&self) -> Duration {
        self.ttl / 4
    }

    /// Renews the lease. An error other than a conflict leaves it to run out (the next
    /// renewal may work); a conflict or a missing record means another process declared
    /// this one gone: the lease is lost for good.
    pub async fn renew(&self) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let began = Instant::now();
        let (mut next, revision) = {
            let g = self.lock();
            (g.record.value.clone(), g.record.revision)
        };
        next.renewed_at = Timestamp::now();
        match self.store.put_obj(&next, Expect::Revision(revision)).await {
            Ok(revision) => {
                let mut g = self.lock();
                g.record = Versioned {
                    revision,
                    value: next,
                };
                g.renewed = began;
                Ok(())
            }
            Err(Error::Conflict { .. }) => {
                self.lost.store(true, Ordering::SeqCst);
                tracing::error!(
                    "{}: its lease was taken over; its jobs belong to others now",
                    next.describe()
                );
                Err(self.lost_error())
            }
            Err(e) => Err(e),
        }
    }

    /// True once another process has declared this one gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// `Ok` while this process may act for its jobs: the lease is not lost and was renewed
    /// within half its time (the other half is the margin before anyone else may call it
    /// expired).
    pub fn check(&self) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let since = self.lock().renewed.elapsed();
        if since > self.ttl / 2 {
            return Err(Error::Aborted {
                what: format!(
                    "{}: its lease was last renewed {} ms ago (lease time {} ms), so its jobs may be taken over",
                    self.record().describe(),
                    since.as_millis(),
                    self.ttl.as_millis()
                ),
            });
        }
        Ok(())
    }

    fn lost_error(&self) -> Error {
        Error::Aborted {
            what: format!(
                "{} lost its lease: another process took over its jobs",
                self.record().describe()
            ),
        }
    }

    /// Removes this instance's record (a clean close). Its jobs must have finished.
    pub async fn release(&self) -> Result<()> {
        if self.is_lost() {
            return Ok(());
        }
        let (id, revision) = {
            let g = self.lock();
            (g.record.value.id, g.record.revision)
        };
        self.lost.store(true, Ordering::SeqCst);
        let delete = WriteOp::delete::<ManagerInstance>(id, Expect::Revision(revision));
        match self.store.commit(&[delete], &[]).await {
            Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether a manager instance can still be acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its lease holds and, as far as can be told, its process runs.
    Alive,
    /// It has not renewed its lease in time.
    Expired,
    /// Its process no longer exists (same host, same boot), or it left no record.
    Gone,
}

impl Liveness {
    /// How `instance` stands at `now`, as seen from `here`.
    pub fn of(instance: Option<&ManagerInstance>, here: &HostIdentity, now: Timestamp) -> Self {
        let Some(i) = instance else {
            return Liveness::Gone;
        };
        if i.host == here.host
            && i.boot_id == here.boot_id
            && !here.boot_id.is_empty()
            && !process_matches(i.pid, i.process_start)
        {
            return Liveness::Gone;
        }
        if now > i.expires_at() {
            Liveness::Expired
        } else {
            Liveness::Alive
        }
    }

    /// True when the instance's jobs are free to be recovered.
    pub fn is_dead(self) -> bool {
        self != Liveness::Alive
    }
}

/// Which machine, in which boot, this process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host name.
    pub host: String,
    /// Boot id ("" where the kernel does not say).
    pub boot_id: String,
}

impl HostIdentity {
    /// This process's host.
    pub fn current() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let mut host = read("/proc/sys/kernel/hostname");
        if host.is_empty() {
            host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
        }
        HostIdentity {
            host,
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of `/proc/<pid>/stat`),
/// or `None` if there is no such process — or only its exit status is left (a zombie
/// waiting for its parent: it will never act again).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
    // that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True if `pid` is the process that started at `start` (0: any process with that pid).
fn process_matches(pid: u32, start: u64) -> bool {
    match process_start(pid) {
        None => false,
        Some(s) => start == 0 || s == start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_gone() {
        let here = HostIdentity::current();
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let now = Timestamp::now();
        let mut i = ManagerInstance {
            id: InstanceId::new(),
            initiator: "t".into(),
            pid: me,
            process_start: start,
            host: here.host.clone(),
            boot_id: here.boot_id.clone(),
            started_at: now,
            renewed_at: now,
            ttl_ms: 10_000,
        };
        assert_eq!(Liveness::of(Some(&i), &here, now), Liveness::Alive);
        // The same pid with another start time is another process: gone.
        i.process_start = start + 1;
        assert_eq!(Liveness::of(Some(&i), &here, now), Liveness::Gone);
        // A child that has exited, not yet reaped (a zombie), then reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(process_start(pid), None, "a zombie is gone");
        child.wait().unwrap();
        i.pid = pid;
        i.process_start = 0;
        assert_eq!(Liveness::of(Some(&i), &here, now), Liveness::Gone);
        // On another host only the lease counts.
        let elsewhere = HostIdentity {
            host: "elsewhere".into(),
            boot_id: "x".into(),
        };
        assert_eq!(Liveness::of(Some(&i), &elsewhere, now), Liveness::Alive);
        assert_eq!(
            Liveness::of(Some(&i), &elsewhere, Timestamp(now.0 + 10_001)),
            Liveness::Expired
        );
        assert_eq!(Liveness::of(None, &here, now), Liveness::Gone);
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_lost_for_good() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let lease = OwnerLease::register(store.clone(), Duration::from_secs(10), "t")
            .await
            .unwrap();
        lease.check().unwrap();
        lease.renew().await.unwrap();
        // Another process declares it gone by removing its record.
        let rec = store
            .get_obj::<ManagerInstance>(&lease.id().to_string())
            .await
            .unwrap()
            .unwrap();
        store
            .commit(
                &[WriteOp::delete::<ManagerInstance>(
                    lease.id(),
                    Expect::Revision(rec.revision),
                )],
                &[],
            )
            .await
            .unwrap();
        assert!(matches!(lease.renew().await, Err(Error::Aborted { .. })));
        assert!(lease.is_lost());
        assert!(lease.check().is_err());
    }

    #[tokio::test]
    async fn a_lease_not_renewed_in_time_stops_its_holder() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let lease = OwnerLease::register(store, Duration::from_millis(200), "t")
            .await
            .unwrap();
        lease.check().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let err = lease.check().unwrap_err();
        assert!(err.to_string().contains("may be taken over"), "{err}");
        lease.renew().await.unwrap();
        lease.check().unwrap();
    }
}
