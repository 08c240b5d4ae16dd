//! The template pipeline through its own binary on a real broker: archive → replay → live →
//! killed → restarted, ending with exactly the output of an uninterrupted run.
//!
//! Needs Tansu: `scripts/test -p kappa-template` starts one (or set `KAPPA_TANSU_BIN`).

use std::time::Duration;

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_template::View;
use kappa_testkit::{consume_committed, manifests, unique, Job, Tansu};

const BINARY: &str = env!("CARGO_BIN_EXE_page-views");

/// `n` page views over two partitions, a few seconds apart, deterministic.
fn views(n: u64) -> Vec<OutgoingRecord> {
    let pages = ["/", "/about", "/blog", "/pricing", "/docs"];
    (0..n)
        .map(|i| {
            let user = i.wrapping_mul(2_654_435_761) % 97;
            let view = View { ts: 1_700_000_000_000 + i * 2_500, page: pages[(i * 7 % 5) as usize].into(), user };
            OutgoingRecord {
                partition: (user % 2) as i32,
                key: user.to_string().into_bytes(),
                value: serde_json::to_vec(&view).expect("serializes"),
                timestamp: view.ts as i64,
            }
        })
        .collect()
}

/// `page-views replay` of `topic` into `output`: archive first, then live, restartable.
fn replay_args(topic: &str, brokers: &str, archive: Option<&str>, output: &str, checkpoint: &str) -> Vec<String> {
    let mut args = vec!["replay", "--topic", topic, "--brokers", brokers, "--output", output];
    args.extend(["--checkpoint", checkpoint, "--checkpoint-every", "150ms", "--exit-when-idle", "3s"]);
    // Compared with a run over records all present at once: no idle decisions.
    args.extend(["--idle-timeout", "off"]);
    if let Some(archive) = archive {
        args.extend(["--archive", archive, "--then-live"]);
    }
    args.into_iter().map(String::from).collect()
}

fn run_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(BINARY).args(args).output().expect("run page-views");
    assert!(out.status.success(), "page-views {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(brokers: &str, topic: &str) -> Vec<String> {
    consume_committed(brokers, topic).into_iter().map(|(k, v)| format!("{k} {v:?}")).collect()
}

#[test]
fn archive_then_live_killed_and_restarted_equals_the_uninterrupted_run() {
    let tansu = Tansu::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let all = views(6_000);
    let (history, live) = all.split_at(4_000);

    // `pipelines` lists this binary's one pipeline with its input.
    let listed = run_ok(&["pipelines"]);
    assert!(
        listed.contains("page-views") && listed.contains("views") && listed.contains("{page, hour, views, visitors}"),
        "{listed}"
    );

    // The uninterrupted run: every record already in the broker, read live from the start.
    let reference_topic = unique("views-reference");
    tansu.create_topic(&reference_topic, 2);
    produce(&tansu.brokers, &reference_topic, all.clone(), &|_| ()).expect("produce");
    let reference_out = unique("page-hours-reference");
    let reference_ckpt = format!("file://{}", dir.path().join("reference-ckpt").display());
    let args = replay_args(&reference_topic, &tansu.brokers, None, &format!("kafka:{reference_out}"), &reference_ckpt);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = output(&tansu.brokers, &reference_out);
    assert!(expected.len() > 100, "the reference run wrote {} records", expected.len());

    // The job under test: history archived, the rest produced while it runs, killed once.
    let topic = unique("views");
    tansu.create_topic(&topic, 2);
    produce(&tansu.brokers, &topic, history.to_vec(), &|_| ()).expect("produce history");
    let archive = format!("file://{}", dir.path().join("archive").display());
    let written = run_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive]);
    assert!(written.contains("archived 4000 records"), "{written}");
    let producer = {
        let (brokers, topic, live) = (tansu.brokers.clone(), topic.clone(), live.to_vec());
        std::thread::spawn(move || {
            for chunk in live.chunks(200) {
                produce(&brokers, &topic, chunk.to_vec(), &|_| ()).expect("produce live records");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = unique("page-hours");
    let checkpoint_dir = dir.path().join("ckpt");
    let checkpoint = format!("file://{}", checkpoint_dir.display());
    let job = Job {
        binary: BINARY.into(),
        args: replay_args(&topic, &tansu.brokers, Some(&archive), &format!("kafka:{out}"), &checkpoint),
        env: vec![("RUST_LOG".into(), "kappa_connectors=info".into())],
    };
    // Killed once it has a complete checkpoint and has gone on a little: mid-run, with state to
    // restore (or after a minute, which then fails the test below).
    let kill: Box<dyn Fn(Duration) -> bool> =
        Box::new(move |elapsed| elapsed > Duration::from_secs(60) || manifests(&checkpoint_dir).len() >= 2);
    let logs = job.run_killed_when(&[kill], &|| producer.is_finished());
    producer.join().expect("producer");
    // Killed once, then run to the end (more than once if a run went idle before the last records).
    assert!(logs.len() >= 2, "killed once, then run to the end");
    assert!(
        logs[1].contains("restoring from checkpoint"),
        "the second run restored the first's checkpoint:\n{}",
        logs.join("\n---\n")
    );
    let got = output(&tansu.brokers, &out);
    assert!(
        got == expected,
        "{} output records, expected {}; first difference at {:?}\nlogs:\n{}",
        got.len(),
        expected.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b),
        logs.join("\n---\n")
    );
}
