//! What long-running backend operations get from their caller: a way to report progress
//! and a way to learn they should stop.

use std::sync::Arc;

pub use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Receives `(done, total)` units of work (bytes, pages, items).
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Context for a long operation (a copy, an import, a migration): progress out, abort in.
#[derive(Clone, Default)]
pub struct OpContext {
    progress: Option<ProgressFn>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext")
            .field("aborted", &self.is_aborted())
            .finish()
    }
}

impl OpContext {
    /// A context that reports nowhere and is never aborted.
    pub fn none() -> Self {
        Self::default()
    }

    /// A context reporting progress to `f`.
    pub fn with_progress(f: ProgressFn) -> Self {
        OpContext {
            progress: Some(f),
            cancel: CancellationToken::new(),
        }
    }

    /// The same context, aborted when `token` is cancelled.
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Reports progress.
    pub fn progress(&self, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(done, total);
        }
    }

    /// True once an abort was asked.
    pub fn is_aborted(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(Aborted)` once an abort was asked: call it between units of work.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_aborted() {
            Err(Error::Aborted {
                what: what.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// The cancellation token, to hand on or to `select!` on.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
}
