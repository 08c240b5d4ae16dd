//! Page views per page per hour equal the batch reference at every completed time, over random
//! histories, archive/live splits, workers, batchings, granularities and restarts: the property
//! harness, pointed at a pipeline of our own.
//!
//! Re-run a failure with `cargo test -p kappa-template --test harness` (the failing seed is saved
//! beside this file); raise `PROPTEST_CASES` for a longer search.

use kappa_engine::Record;
use kappa_proptests::harness::Harness;
use kappa_template::{reference, PageViews, View, HOUR_MS, VIEWS};
use proptest::prelude::*;

/// One partition's views: two or three hours of them, a few minutes apart, disordered by up to
/// ten minutes, over four pages and five users.
fn views() -> impl Strategy<Value = Vec<View>> {
    let view = (0u64..600_000, prop::sample::select(vec!["/", "/about", "/blog", "/pricing"]), 0u64..5);
    prop::collection::vec(view, 0..30).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (jitter, page, user))| View {
                ts: 5 * HOUR_MS + i as u64 * 300_000 + jitter,
                page: page.to_string(),
                user,
            })
            .collect()
    })
}

fn record(view: &View) -> Record {
    Record {
        offset: 0,
        timestamp: Some(view.ts as i64),
        key: Some(view.user.to_string().into()),
        value: Some(serde_json::to_vec(view).expect("a view serializes").into()),
    }
}

#[test]
fn page_views_equal_the_batch_reference_at_every_time() {
    Harness::new(PageViews)
        .input(&VIEWS, prop::collection::vec(views(), 1..4), record)
        .reference(|at| reference(at.events::<View>(VIEWS.name)))
        .lateness([0, 60_000, 600_000])
        .granularities([0, 0, 60_000, HOUR_MS])
        .cases(96)
        .check();
}
