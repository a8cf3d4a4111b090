use serde::{Deserialize, Serialize};

use crate::id::{InstanceId, Timestamp};

/// A running manager (one per process that opened the store), as recorded in the store:
/// its lease on the jobs it owns. It renews `renewed_at` every few seconds; once
/// `renewed_at + ttl_ms` has passed — or its process is provably gone from the host it
/// ran on — its unfinished jobs are someone else's to roll back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerInstance {
    /// Its id.
    pub id: InstanceId,
    /// Who it acts for.
    pub initiator: String,
    /// Its process id.
    pub pid: u32,
    /// When its process started, in clock ticks after boot (`/proc/<pid>/stat` field 22):
    /// with `pid` it names one process, even after the pid is reused.
    pub process_start: u64,
    /// The host's name.
    pub host: String,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`): same host and same boot
    /// means its process table can tell whether the process still exists.
    pub boot_id: String,
    /// When it registered.
    pub started_at: Timestamp,
    /// When it last renewed its lease (its own clock).
    pub renewed_at: Timestamp,
    /// How long a renewal holds, in milliseconds.
    pub ttl_ms: u64,
}

impl ManagerInstance {
    /// When its lease runs out unless renewed.
    pub fn expires_at(&self) -> Timestamp {
        Timestamp(self.renewed_at.0.saturating_add(self.ttl_ms))
    }

    /// "manager 1a2b3c4d (pid 123 on host-1)", for messages.
    pub fn describe(&self) -> String {
        let id = self.id.to_string();
        format!(
            "manager {} (pid {} on {})",
            &id[..8.min(id.len())],
            self.pid,
            self.host
        )
    }
}
