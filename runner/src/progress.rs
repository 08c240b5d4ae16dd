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

/// A bar over `total` steps of `what`, with rate and ETA, on stderr.
pub fn counted(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {human_pos}/{human_len} ({per_sec}, ETA {eta}) {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// A replay's counters and totals, for a progress bar over the archive's bytes.
pub struct ReplayProgress {
    /// The replay's counters.
    pub metrics: Arc<kappa_replay::source::ReplayMetrics>,
    /// Bytes in the archive's segments.
    pub total_bytes: u64,
    /// Partitions in the archive.
    pub partitions: usize,
}

/// A bar over a replay's archive bytes, with records, rate, partitions done and ETA; then the
/// live records.
pub fn replay_bar(what: &str, progress: &ReplayProgress, metrics: Arc<Metrics>) -> ProgressWatcher {
    let bar = ProgressBar::new(progress.total_bytes.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg} [{elapsed} < {eta}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    let replay = progress.metrics.clone();
    let partitions = progress.partitions;
    let started = std::time::Instant::now();
    ProgressWatcher::with_update(bar, move |bar| {
        let records = metrics.records();
        let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(replay.bytes.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{records} records ({rate:.0}/s), partitions {}/{partitions} replayed",
            replay.partitions_done.load(Ordering::Relaxed)
        ));
    })
}

/// Keeps `bar` in step with a job's record counter until dropped.
pub struct ProgressWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressWatcher {
    /// Follows `metrics` on `bar`.
    pub fn new(bar: ProgressBar, metrics: Arc<Metrics>) -> Self {
        Self::with_update(bar, move |bar| bar.set_position(metrics.records()))
    }

    /// Calls `update` on `bar` ten times a second until dropped.
    pub fn with_update(bar: ProgressBar, update: impl Fn(&ProgressBar) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                update(&bar);
                std::thread::sleep(Duration::from_millis(100));
            }
            update(&bar);
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
