//! The archive-to-live handoff.
//!
//! A partition is replayed from the archive up to the archive's end offset `E` (the offset after
//! its last archived record), then read from the broker starting at exactly `E`. Because time
//! assignment depends only on a partition's records in offset order and the engine keeps one
//! [`TimeAssigner`](kappa_engine::TimeAssigner) per partition across the switch, the records and
//! their times are those of reading the whole partition from one place: no record twice, none
//! missed. The only way this can fail is if the broker no longer has offset `E`; that is checked
//! before the job starts ([`check_handoff`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kappa_engine::{BoxError, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};

use crate::error::{Error, Result};
use crate::source::ReplaySource;

/// Checks that every partition can continue live at its archive's end: for each partition the
/// broker has, the archive's end (0 if the archive lacks the partition) lies within the broker's
/// `log start..=high watermark`; and the archive has no partition the broker lacks.
pub fn check_handoff(
    topic: &str,
    archive_ends: &BTreeMap<i32, Offset>,
    broker: &BTreeMap<i32, (Offset, Offset)>,
) -> Result<()> {
    for (&partition, &archive_end) in archive_ends {
        if !broker.contains_key(&partition) {
            return Err(Error::ArchiveAhead { topic: topic.to_string(), partition, archive_end, high_watermark: 0 });
        }
    }
    for (&partition, &(log_start, high_watermark)) in broker {
        let archive_end = archive_ends.get(&partition).copied().unwrap_or(0);
        if archive_end < log_start {
            return Err(Error::HandoffGap { topic: topic.to_string(), partition, archive_end, log_start });
        }
        if archive_end > high_watermark {
            return Err(Error::ArchiveAhead { topic: topic.to_string(), partition, archive_end, high_watermark });
        }
    }
    Ok(())
}

/// A replay that continues live: the archive, then `live` from each partition's archive end.
pub struct Handoff {
    replay: ReplaySource,
    live: Arc<dyn SourceFactory>,
    ends: BTreeMap<i32, Offset>,
    switched_at: Arc<Mutex<Option<Instant>>>,
}

impl Handoff {
    /// Joins `replay` to `live` after checking, with the broker's `watermarks`, that no offset
    /// falls between them.
    pub fn new(
        replay: ReplaySource,
        live: Arc<dyn SourceFactory>,
        watermarks: &BTreeMap<i32, (Offset, Offset)>,
    ) -> Result<Self> {
        let ends = replay.end_offsets();
        check_handoff(replay.topic(), &ends, watermarks)?;
        Ok(Handoff { replay, live, ends, switched_at: Arc::default() })
    }

    /// Where each partition switches to live.
    pub fn handoff_offsets(&self) -> &BTreeMap<i32, Offset> {
        &self.ends
    }

    /// When the last reader of this process switched to live, if any has.
    pub fn switched_at(&self) -> Arc<Mutex<Option<Instant>>> {
        self.switched_at.clone()
    }
}

impl SourceFactory for Handoff {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        let mut all = self.live.partitions()?;
        all.extend(self.replay.partitions()?);
        all.sort();
        all.dedup();
        Ok(all)
    }

    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let archive = self.replay.open(owned)?;
        // Live reading starts where the archive ends, or where the caller's start lies beyond it.
        let live_starts = owned
            .iter()
            .map(|(pid, start)| {
                let end = self.ends.get(&pid.partition).copied().unwrap_or(0);
                (pid.clone(), Some(start.map_or(end, |s| s.max(end))))
            })
            .collect();
        Ok(Box::new(HandoffReader {
            archive: Some(archive),
            archive_open: vec![true; owned.len()],
            live: None,
            live_factory: self.live.clone(),
            live_starts,
            switched_at: self.switched_at.clone(),
        }))
    }

    /// The archive's records are backfill; the live ones after them are not.
    fn backfill_end(&self, partition: &PartitionId) -> Option<Offset> {
        Some(self.ends.get(&partition.partition).copied().unwrap_or(0))
    }
}

struct HandoffReader {
    archive: Option<Box<dyn PartitionedSource>>,
    archive_open: Vec<bool>,
    live: Option<Box<dyn PartitionedSource>>,
    live_factory: Arc<dyn SourceFactory>,
    live_starts: Vec<(PartitionId, Option<Offset>)>,
    switched_at: Arc<Mutex<Option<Instant>>>,
}

impl PartitionedSource for HandoffReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        if let Some(archive) = self.archive.as_mut() {
            // The archive's "finished" means "archive done": the partition goes on, live.
            let mut archive_done = Vec::new();
            let poll = archive.poll(out, &mut archive_done)?;
            for index in archive_done {
                self.archive_open[index] = false;
            }
            if self.archive_open.iter().any(|&o| o) || !out.is_empty() {
                return Ok(poll);
            }
            self.archive = None;
            // Switch all of this worker's partitions together: the archive is far faster than
            // live, so waiting for the slowest costs little, and one consumer serves them all.
            self.live = Some(self.live_factory.open(&self.live_starts)?);
            *self.switched_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        match self.live.as_mut() {
            Some(live) => live.poll(out, finished),
            None => Ok(Poll::Pending),
        }
    }

    fn hold(&mut self, index: usize, held: bool) {
        match (self.archive.as_mut(), self.live.as_mut()) {
            (Some(archive), _) => archive.hold(index, held),
            (None, Some(live)) => live.hold(index, held),
            (None, None) => {}
        }
    }

    fn caught_up(&self, index: usize) -> Option<Offset> {
        self.live.as_ref()?.caught_up(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_between_archive_and_log_start_names_topic_partition_and_range() {
        let ends = BTreeMap::from([(0, 100), (1, 50)]);
        let broker = BTreeMap::from([(0, (0, 120)), (1, (75, 90))]);
        let err = check_handoff("likes", &ends, &broker).expect_err("gap");
        assert!(matches!(err, Error::HandoffGap { partition: 1, archive_end: 50, log_start: 75, .. }));
        assert!(err.to_string().contains("`likes` partition 1"), "{err}");
        assert!(err.to_string().contains("50..75"), "{err}");
    }

    #[test]
    fn archive_at_log_start_or_within_the_log_hands_off() {
        let ends = BTreeMap::from([(0, 100)]);
        let broker = BTreeMap::from([(0, (100, 100)), (1, (0, 7))]);
        check_handoff("likes", &ends, &broker).expect("no gap");
    }

    #[test]
    fn archive_past_the_broker_end_is_refused() {
        let err = check_handoff("t", &BTreeMap::from([(0, 10)]), &BTreeMap::from([(0, (0, 5))])).expect_err("ahead");
        assert!(matches!(err, Error::ArchiveAhead { high_watermark: 5, .. }));
    }
}
