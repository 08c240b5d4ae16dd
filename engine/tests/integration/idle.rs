//! One silent partition must not hold back every result; the decisions that advance it are
//! recorded, so a restart or a replay with them gives the same output.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_engine::{execute, ClusterConfig, JobOptions, MemorySink, Retention, Sources};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::{checkpoint, decode, Feed, Run};

/// Pushes 20 words at 100 ms steps of event time (1,000 to 2,900), word `i` to partition
/// `partition(i)` of two, then nothing; returns how long after the last push the output reached
/// time `target` (`None`: not before the job was stopped).
fn latency_after_pushes(
    idle_timeout: Option<Duration>,
    lateness_ms: u64,
    partition: fn(usize) -> usize,
    target: u64,
) -> Option<Duration> {
    let feed = Feed::new(2);
    let sink = MemorySink::new();
    let (job_feed, job_sink) = (feed.clone(), sink.clone());
    let options = JobOptions { lateness_ms, idle_timeout, ..JobOptions::default() };
    let job = std::thread::spawn(move || {
        execute(&ClusterConfig::threads(2), options, Sources::new().with("words", job_feed), move |ctx| {
            let words = ctx.durable_input("words", decode, Retention::Collapse)?;
            ctx.output(words.count(), job_sink.clone());
            Ok(())
        })
    });
    for i in 0..20 {
        feed.push(partition(i), 1_000 + 100 * i as i64, &format!("w{}", i % 3));
        std::thread::sleep(Duration::from_millis(5));
    }
    let pushed = Instant::now();
    let mut reached = None;
    while pushed.elapsed() < Duration::from_secs(3) {
        if sink.updates().iter().any(|(_, time, _)| *time >= target) {
            reached = Some(pushed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    feed.stop.store(true, Ordering::SeqCst);
    job.join().expect("job thread").expect("job runs");
    assert!(sink.is_finished());
    reached
}

/// Partition 1 never hears a word; with lateness 50, everything up to 2,850 is complete once
/// partition 1 no longer holds it back.
fn latency_with_one_silent_partition(idle_timeout: Option<Duration>) -> Option<Duration> {
    latency_after_pushes(idle_timeout, 50, |_| 0, 2_800)
}

#[test]
fn one_silent_partition_does_not_hold_back_results_beyond_the_idle_timeout() {
    let latency = latency_with_one_silent_partition(Some(Duration::from_millis(200)));
    let latency = latency.expect("results reached the sink while the job ran");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[test]
fn without_an_idle_timeout_a_silent_partition_holds_back_every_result() {
    // The control for the test above: the stall it guards against is real.
    assert_eq!(latency_with_one_silent_partition(None), None);
}

/// Both partitions hear words, then nothing: the last word, at 2,900, is complete only once
/// both partitions have moved past it.
fn latency_of_the_last_record_before_a_quiet_spell(idle_timeout: Option<Duration>) -> Option<Duration> {
    latency_after_pushes(idle_timeout, 0, |i| i % 2, 2_900)
}

#[test]
fn when_every_partition_goes_quiet_the_last_records_complete_after_the_idle_timeout() {
    let latency = latency_of_the_last_record_before_a_quiet_spell(Some(Duration::from_millis(200)));
    let latency = latency.expect("the last record's time reached the sink while the job ran");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    // The control: without idle decisions the last time waits for the next record.
    assert_eq!(latency_of_the_last_record_before_a_quiet_spell(None), None);
}

#[test]
fn a_crashed_live_job_with_idle_advances_restarts_to_the_output_its_recorded_decisions_give() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let out = dir.path().join("live.jsonl");
    let mut feed = Feed::new(2);
    feed.crash_after = Some(25);
    let job_feed = feed.clone();
    let run = Run {
        idle_timeout: Some(Duration::from_millis(60)),
        checkpoint: Some(checkpoint(store.clone(), 0)),
        ..Run::plain(1)
    };
    let crashed_out = out.clone();
    let job = std::thread::spawn(move || run.count(job_feed, &crashed_out));
    // Bursts on partition 0 with pauses longer than the idle timeout; partition 1 stays silent.
    // The event times run ahead of partition 0's pauses, so advances change later records' times.
    let mut ts = 1_000;
    for burst in 0..8 {
        for i in 0..12 {
            feed.push(0, ts, &format!("{}w{}", if i % 5 == 4 { "-" } else { "" }, (burst + i) % 4));
            ts += 7;
        }
        if burst % 3 == 2 {
            // Late words on the silent partition: raised to the watermark its advances set.
            feed.push(1, ts - 300, "w9");
            feed.push(1, ts - 290, "w8");
        }
        ts -= 40;
        std::thread::sleep(Duration::from_millis(150));
    }
    let crashed = job.join().expect("job thread");
    assert!(crashed.is_err(), "the job crashed");
    // Restart over the same records, now complete; it ends once caught up.
    let mut feed_after = feed.clone();
    feed_after.crash_after = None;
    feed_after.stop.store(true, Ordering::SeqCst);
    let run = Run {
        idle_timeout: Some(Duration::from_millis(60)),
        checkpoint: Some(checkpoint(store.clone(), 0)),
        ..Run::plain(1)
    };
    run.count(feed_after.clone(), &out).expect("the restart completes");
    let restarted = std::fs::read_to_string(&out).expect("output");
    assert!(restarted.lines().count() > 10);

    // A replay of the same history with only the recorded decisions (no checkpoint, no timeout).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let decisions: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let advanced = rt.block_on(async {
        use futures::TryStreamExt;
        let clocks: Vec<_> = store.list(Some(&"ckpt/clock".into())).try_collect().await.expect("list");
        let mut advanced = false;
        for object in clocks {
            let bytes = store.get(&object.location).await.expect("get").bytes().await.expect("bytes");
            advanced |= String::from_utf8_lossy(&bytes).contains("\"advances\":[[");
            decisions.put(&object.location, bytes.into()).await.expect("put");
        }
        advanced
    });
    assert!(advanced, "the live job recorded idle advances");
    let replayed = dir.path().join("replayed.jsonl");
    let run = Run { checkpoint: Some(checkpoint(decisions, 0)), ..Run::plain(2) };
    run.count(feed_after, &replayed).expect("the replay completes");
    assert_eq!(std::fs::read_to_string(&replayed).expect("replayed"), restarted, "same records, same decisions");
}
