//! Fault injection shared by the simulated backends.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::{Error, Result};

/// Faults to inject into a simulated backend.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<FaultState>,
    /// True while the backend is hung: operations wait until it is not.
    hung: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Operations that fail, and how many more times.
    fail: HashMap<String, u32>,
    /// Operations that take this long.
    delay: HashMap<String, Duration>,
    /// The host is down: every operation fails.
    down: bool,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        lock(&self.inner)
    }

    /// The next `times` calls of `op` fail with a backend error.
    pub fn fail(&self, op: &str, times: u32) {
        self.lock().fail.insert(op.to_string(), times);
    }

    /// Every call of `op` takes `delay` first.
    pub fn delay(&self, op: &str, delay: Duration) {
        self.lock().delay.insert(op.to_string(), delay);
    }

    /// The host goes down (or comes back): operations fail while it is down.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// True while the host is down.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// The host stops answering (or answers again): operations block while it hangs.
    pub fn set_hung(&self, hung: bool) {
        self.hung.send_replace(hung);
    }

    /// Clears every fault.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
        self.set_hung(false);
    }

    /// Applies the faults for one call of `op` on `backend`: waits while hung, sleeps the
    /// configured delay, fails if the host is down or the op is set to fail.
    pub async fn enter(&self, backend: &str, op: &str) -> Result<()> {
        let mut hung = self.hung.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = hung.wait_for(|h| !*h).await;
        let delay = self.lock().delay.get(op).copied();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut st = self.lock();
        if st.down {
            return Err(Error::backend(backend, format!("{op}: host is down")));
        }
        if let Some(n) = st.fail.get_mut(op)
            && *n > 0
        {
            *n -= 1;
            return Err(Error::backend(backend, format!("{op}: injected failure")));
        }
        Ok(())
    }
}
