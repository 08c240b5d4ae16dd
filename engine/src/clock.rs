//! The decisions besides a partition's records that fix its times, recorded durably.
//!
//! Invariant 1 says a record's time is a pure function of its partition's records in offset order
//! *plus decisions the job recorded durably*. There are two kinds of decision:
//!
//! 1. **Where the backfill ends.** With a backfill granularity, records replayed from an archive
//!    have their times rounded up; live records keep theirs. Which records count as backfill must
//!    not depend on how far the archive reached when *this* run started: a record read live by
//!    one run is in the archive by the next. So the first run records each partition's boundary,
//!    and later runs keep it. Only while no run has read a record past the boundary may a later run
//!    move the boundary forward (records past the old boundary were then never read, so no output
//!    depends on their times yet); the first such read is recorded before its time is used.
//! 2. **Idle advances** `(offset, watermark)`: a live partition that had delivered every record
//!    before `offset`, whose end the broker confirmed, and that stayed silent for the idle timeout,
//!    had its watermark raised to `watermark` (the greatest watermark of the job's partitions that
//!    were still delivering records), so that one silent partition does not hold back every
//!    result. When every partition is quiet, none advances: there is nothing to follow. A replay applies the advance at
//!    the same place: after the record at `offset − 1`, before the one at `offset`.
//!
//! A restartable job (one with a checkpoint location) writes a partition's decisions to
//! `<checkpoint>/clock/<input>+<topic>+<partition>.json` *before* acting on them: the boundary
//! before the first record is read, an advance before the watermark moves. Only the partition's
//! owner writes its object (one writer per object, so a whole-object PUT is enough). The clock is
//! independent of checkpoint generations: a restart from any generation, or a full replay after
//! every checkpoint was damaged, applies the same decisions. A job without a checkpoint location
//! keeps its decisions in memory: it cannot restart, so nothing else needs them.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::{Offset, PartitionId};
use crate::time::Time;

/// Version of the clock object format.
const FORMAT: u32 = 1;

/// One partition's recorded decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// The format version (`FORMAT`, 1).
    #[serde(default)]
    pub format: u32,
    /// Records at lower offsets are backfill; `None`: none are.
    pub backfill_end: Option<Offset>,
    /// Whether a run has read a record at or past the boundary, with its exact time (then the
    /// boundary never moves again). Recorded before that record's time is used.
    pub live: bool,
    /// Idle advances, by increasing offset: before the record at `offset`, the watermark is at
    /// least `watermark`.
    pub advances: Vec<(Offset, Time)>,
}

impl PartitionClock {
    /// The clock a run uses: the recorded one (`None` on a first run) settled with this run's
    /// backfill end. Returns whether it changed, and so must be recorded before the run reads the
    /// partition.
    pub fn settle(recorded: Option<PartitionClock>, backfill_end: Option<Offset>) -> (Self, bool) {
        match recorded {
            None => (PartitionClock { format: FORMAT, backfill_end, live: false, advances: Vec::new() }, true),
            Some(clock) if clock.live => (clock, false),
            Some(mut clock) => {
                // No run read a record past the recorded boundary: those beyond it were never
                // read, so they may still become backfill of an archive that has grown since.
                let before = clock.backfill_end;
                clock.backfill_end = clock.backfill_end.max(backfill_end);
                let changed = clock.backfill_end != before;
                (clock, changed)
            }
        }
    }

    /// Whether the record at `offset` is backfill.
    pub fn is_backfill(&self, offset: Offset) -> bool {
        self.backfill_end.is_some_and(|end| offset < end)
    }

    /// Records an advance at `offset` (replacing one already recorded at the same offset: the
    /// partition was idle at one place, and the watermark went on rising).
    pub fn record_advance(&mut self, offset: Offset, watermark: Time) {
        match self.advances.last_mut() {
            Some(last) if last.0 == offset => last.1 = last.1.max(watermark),
            _ => self.advances.push((offset, watermark)),
        }
    }
}

/// Reads and writes the clock objects of a checkpoint location.
pub(crate) struct ClockStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: tokio::runtime::Runtime,
}

impl ClockStore {
    /// The clock beside the checkpoints under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path) -> Result<Self> {
        Ok(ClockStore { store, prefix: prefix.clone().join("clock"), runtime: crate::checkpoint::runtime()? })
    }

    fn object(&self, input: &str, partition: &PartitionId) -> Path {
        // `+` as in part names: object_store escapes `~`, and topic names cannot contain `+`.
        self.prefix.clone().join(format!("{input}+{}+{}.json", partition.topic, partition.partition))
    }

    /// The recorded clock of `partition` of `input`, if any run recorded one.
    pub fn load(&self, input: &str, partition: &PartitionId) -> Result<Option<PartitionClock>> {
        let path = self.object(input, partition);
        let damaged = |reason: String| Error::Checkpoint {
            object: path.to_string(),
            reason: format!(
                "{reason}; the job's recorded time decisions are unreadable: delete the checkpoint location and the \
                 outputs to start over"
            ),
        };
        let bytes = self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(get) => get.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let Some(bytes) = bytes.map_err(|e| damaged(format!("cannot read ({e})")))? else { return Ok(None) };
        let clock: PartitionClock =
            serde_json::from_slice(&bytes).map_err(|e| damaged(format!("damaged at byte {}: {e}", e.column())))?;
        if clock.format != FORMAT {
            return Err(damaged(format!("it has format {} and this kappa reads format {FORMAT}", clock.format)));
        }
        if clock.advances.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(damaged("its advances are not in offset order".to_string()));
        }
        Ok(Some(clock))
    }

    /// Records `clock` durably (the call returns once the object is written).
    pub fn save(&self, input: &str, partition: &PartitionId, clock: &PartitionClock) -> Result<()> {
        let path = self.object(input, partition);
        let body = serde_json::to_vec(clock).expect("clocks serialize");
        self.runtime.block_on(self.store.put(&path, PutPayload::from(body))).map_err(|e| Error::Checkpoint {
            object: path.to_string(),
            reason: format!("cannot record the partition's time decisions ({e}); check the checkpoint location"),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_run_records_its_boundary_and_a_live_read_freezes_it() {
        let (mut clock, changed) = PartitionClock::settle(None, Some(100));
        assert!(changed && clock.is_backfill(99) && !clock.is_backfill(100));
        clock.live = true;
        // The archive grew to 250, but offsets 100.. were read live: they stay exact.
        let (again, changed) = PartitionClock::settle(Some(clock.clone()), Some(250));
        assert!(!changed);
        assert_eq!(again.backfill_end, Some(100));
    }

    #[test]
    fn replay_only_runs_may_extend_the_boundary_over_records_never_read() {
        let (clock, _) = PartitionClock::settle(None, Some(100));
        let (grown, changed) = PartitionClock::settle(Some(clock), Some(250));
        assert!(changed);
        assert_eq!(grown.backfill_end, Some(250));
        let (shrunk, _) = PartitionClock::settle(Some(grown), Some(10));
        assert_eq!(shrunk.backfill_end, Some(250), "the boundary never moves back");
    }

    #[test]
    fn advances_at_one_offset_keep_the_highest_watermark() {
        let mut clock = PartitionClock::default();
        clock.record_advance(5, 100);
        clock.record_advance(5, 300);
        clock.record_advance(9, 400);
        assert_eq!(clock.advances, vec![(5, 300), (9, 400)]);
    }

    #[test]
    fn clocks_round_trip_and_damage_names_the_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let clocks = ClockStore::new(store.clone(), &Path::from("ckpt")).expect("store");
        let pid = PartitionId::new("likes", 2);
        assert_eq!(clocks.load("in", &pid).expect("loads"), None);
        let (mut clock, _) = PartitionClock::settle(None, Some(7));
        clock.record_advance(7, 1_000);
        clocks.save("in", &pid, &clock).expect("saves");
        assert_eq!(clocks.load("in", &pid).expect("loads"), Some(clock));
        let path = Path::from("ckpt/clock/in+likes+2.json");
        clocks.runtime.block_on(store.put(&path, PutPayload::from(b"{\"garbage".to_vec()))).expect("put");
        let err = clocks.load("in", &pid).expect_err("damaged").to_string();
        assert!(err.contains("ckpt/clock/in+likes+2.json") && err.contains("damaged"), "{err}");
    }
}
