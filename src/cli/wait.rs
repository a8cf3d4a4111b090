//! Waiting on jobs with a progress bar.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use ovm::job::JobHandle;
use serde::de::DeserializeOwned;
use std::io::IsTerminal;

/// Waits for a job, drawing a progress bar on a terminal; returns its result.
pub async fn wait<T: DeserializeOwned>(handle: &JobHandle<T>, show: bool) -> ovm::Result<T> {
    let job = handle.job();
    let bar = if show && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(100);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:40} [{bar:30}] {pos:>3}%")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(job.description.clone());
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    } else {
        None
    };
    let result = match &bar {
        Some(bar) => {
            let mut stream = std::pin::pin!(handle.progress_stream());
            let watcher = async {
                use futures::StreamExt;
                while let Some(p) = stream.next().await {
                    bar.set_position(p.percent as u64);
                }
            };
            let (_, r) = tokio::join!(watcher, handle.join());
            r
        }
        None => handle.join().await,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}
