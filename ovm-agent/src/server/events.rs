//! The agent's event log: every VM event its hypervisor reports, numbered within this run
//! (the epoch), kept in a bounded ring that managers read from where they left off.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use ovm_core::hypervisor::VmEvent;
use ovm_core::sync::lock;
use tokio::sync::watch;

use crate::protocol::{EventBatch, MAX_EVENT_BATCH, Sequenced};

/// Events kept for managers that fall behind or reconnect.
pub const RING: usize = 10_000;

/// A numbered, bounded log of VM events with a wake-up for waiting readers.
pub struct EventLog {
    epoch: String,
    ring: Mutex<VecDeque<Sequenced>>,
    capacity: usize,
    /// The last sequence appended.
    last: watch::Sender<u64>,
}

impl EventLog {
    /// An empty log for a new run of the agent.
    pub fn new(capacity: usize) -> Self {
        EventLog {
            epoch: uuid::Uuid::new_v4().to_string(),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            last: watch::channel(0).0,
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last sequence appended (0: none yet).
    pub fn last(&self) -> u64 {
        *self.last.borrow()
    }

    /// Appends an event.
    pub fn push(&self, event: VmEvent) {
        let mut ring = lock(&self.ring);
        let seq = *self.last.borrow() + 1;
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(Sequenced { seq, event });
        self.last.send_replace(seq);
    }

    /// What came after `since` in `epoch` (another epoch: from this one's start), waiting
    /// up to `wait` for something to come.
    pub async fn read(&self, epoch: &str, since: u64, wait: Duration) -> EventBatch {
        // A reader of another run learns of this one at once, without waiting.
        let (since, wait) = if epoch == self.epoch {
            (since, wait)
        } else {
            (0, Duration::ZERO)
        };
        let mut rx = self.last.subscribe();
        if *rx.borrow_and_update() <= since && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, rx.changed()).await;
        }
        let ring = lock(&self.ring);
        let first = ring.front().map_or(u64::MAX, |e| e.seq);
        let events: Vec<Sequenced> = ring
            .iter()
            .filter(|e| e.seq > since)
            .take(MAX_EVENT_BATCH)
            .cloned()
            .collect();
        EventBatch {
            epoch: self.epoch.clone(),
            // Something after `since` was dropped from the ring before it was read.
            gap: first != u64::MAX && first > since + 1,
            next: events.last().map_or(since, |e| e.seq),
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovm_core::VmId;
    use ovm_core::hypervisor::VmEventKind;

    fn ev() -> VmEvent {
        VmEvent {
            vm: VmId::new(),
            kind: VmEventKind::Started,
        }
    }

    #[tokio::test]
    async fn readers_resume_where_they_left_off_and_hear_of_gaps() {
        let log = EventLog::new(4);
        for _ in 0..3 {
            log.push(ev());
        }
        let b = log.read(log.epoch(), 0, Duration::ZERO).await;
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(!b.gap);
        assert_eq!(b.next, 3);
        let b = log.read(log.epoch(), 3, Duration::from_millis(20)).await;
        assert!(b.events.is_empty() && b.next == 3 && !b.gap);
        for _ in 0..4 {
            log.push(ev());
        }
        // 1..=3 read, 4..=7 appended, the ring keeps 4..=7: nothing lost.
        let b = log.read(log.epoch(), 3, Duration::ZERO).await;
        assert_eq!(b.events.first().map(|e| e.seq), Some(4));
        assert!(!b.gap);
        // A reader still at 1 lost 2 and 3.
        let b = log.read(log.epoch(), 1, Duration::ZERO).await;
        assert!(b.gap);
        // Another epoch: read from this one's start, at once.
        let t = std::time::Instant::now();
        let b = log.read("old", 99, Duration::from_secs(10)).await;
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(b.epoch, log.epoch());
        assert_eq!(b.events.first().map(|e| e.seq), Some(4));
        assert!(b.gap);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_new_event() {
        let log = std::sync::Arc::new(EventLog::new(8));
        let l = log.clone();
        let reader = tokio::spawn(async move {
            let epoch = l.epoch().to_string();
            l.read(&epoch, 0, Duration::from_secs(10)).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        log.push(ev());
        let b = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.events.len(), 1);
    }
}
