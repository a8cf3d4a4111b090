//! A manager's background work: renews its lease on its jobs, catches the index up with
//! other processes' commits, and recovers the jobs of managers that have gone. Ends when
//! the manager is closed or dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, Manager};

pub(super) fn spawn(mgr: &Manager) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(&mgr.inner);
    let closed = mgr.inner.closed.clone();
    let renew_every = mgr.inner.jobs.owner().renew_period();
    let tick = mgr
        .inner
        .sync_interval
        .min(renew_every)
        .max(Duration::from_millis(10));
    rt.spawn(async move {
        let mut renewed = Instant::now();
        let mut recovered = Instant::now();
        loop {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            let mgr = Manager { inner };
            let owner = mgr.inner.jobs.owner().clone();
            if owner.is_lost() {
                return;
            }
            if renewed.elapsed() >= renew_every {
                match owner.renew().await {
                    Ok(()) => renewed = Instant::now(),
                    Err(e) => tracing::warn!("cannot renew the manager's lease: {e}"),
                }
            }
            if let Err(e) = mgr.sync().await {
                tracing::warn!("cannot catch up with the store: {e}");
            }
            // Other managers' jobs are recovered about once per lease time: they cannot
            // expire faster than that.
            if recovered.elapsed() >= owner.ttl() {
                recovered = Instant::now();
                match mgr.inner.jobs.recover().await {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::warn!(
                            count = ids.len(),
                            "rolled back jobs whose managers had gone"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot recover jobs: {e}"),
                }
            }
        }
    });
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}
