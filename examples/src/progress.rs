//! Progress on stderr for long-running commands (hidden when stderr is not a terminal).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kappa_engine::Metrics;

/// A spinner on stderr showing records/s; hidden when stderr is not a terminal.
pub fn progress(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {human_pos} records ({per_sec}) {msg} [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Keeps `bar` in step with a job's record counter until dropped.
pub struct ProgressWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressWatcher {
    /// Follows `metrics` on `bar`.
    pub fn new(bar: ProgressBar, metrics: Arc<Metrics>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                bar.set_position(metrics.records());
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.set_position(metrics.records());
            bar.finish_and_clear();
        });
        ProgressWatcher { stop, thread: Some(thread) }
    }
}

impl Drop for ProgressWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
