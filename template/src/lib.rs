//! A pipeline of your own, start to finish: page views per page per hour.
//!
//! This crate is what a Kappa user writes, and all of it: the input declared with its decoder, the
//! dataflow from the input collection to the output collection, a plain-Rust batch reference, a
//! property test that proves the one equals the other (`tests/harness.rs`), and a binary that is
//! the whole `kappa` command for this pipeline (`src/main.rs`). It uses only Kappa's public API
//! (`kappa-engine`, `kappa-runner`; `kappa-proptests` in tests), so it is also the template to copy:
//! the README's section "Your own pipeline" walks from `cargo new` to a restartable live job.
//!
//! Input: topic `page-views`, JSON values `{"ts": MS, "page": "/path", "user": ID}`.
//! Output: for every page and hour (the hour's first millisecond, UTC), how many views it had and
//! from how many distinct users, keyed by page and hour. Integer arithmetic throughout.
//!
//! # Examples
//!
//! ```
//! use kappa_engine::{Job, MemorySource, Record};
//! use kappa_template::{PageHour, PageViews, VIEWS};
//!
//! let views = [(10, "/a", 1), (20, "/a", 2), (30, "/a", 1), (3_600_000, "/a", 1)];
//! let records: Vec<Record> = views
//!     .iter()
//!     .enumerate()
//!     .map(|(i, &(ts, page, user))| Record {
//!         offset: i as i64,
//!         timestamp: None,
//!         key: None,
//!         value: Some(format!(r#"{{"ts":{ts},"page":"{page}","user":{user}}}"#).into()),
//!     })
//!     .collect();
//! let sink = kappa_engine::MemorySink::new();
//! Job::new(PageViews)
//!     .source(VIEWS.name, MemorySource::new(vec![(kappa_engine::PartitionId::new("page-views", 0), records)]))
//!     .sink(sink.clone())
//!     .run()
//!     .expect("the job runs");
//! let rows: Vec<PageHour> = sink.accumulated().into_iter().map(|(row, _)| row).collect();
//! assert_eq!(rows, vec![
//!     PageHour { page: "/a".into(), hour: 0, views: 3, visitors: 2 },
//!     PageHour { page: "/a".into(), hour: 3_600_000, views: 1, visitors: 1 },
//! ]);
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

use std::collections::{BTreeMap, BTreeSet};

use kappa_engine::{Collection, Diff, Input, InputInfo, Inputs, Keyed, Pipeline, Record, Retention};
use serde::{Deserialize, Serialize};

/// An hour, in ms.
pub const HOUR_MS: u64 = 3_600_000;

/// One page view, as the topic holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct View {
    /// When, ms since the Unix epoch.
    pub ts: u64,
    /// Which page.
    pub page: String,
    /// Who viewed it.
    pub user: u64,
}

/// A page's views in one hour: the output row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageHour {
    /// The page.
    pub page: String,
    /// The hour's first millisecond.
    pub hour: u64,
    /// Views of the page in that hour.
    pub views: u64,
    /// Distinct users among them.
    pub visitors: u64,
}

impl Keyed for PageHour {
    fn key(&self) -> serde_json::Value {
        serde_json::json!({ "page": self.page, "hour": self.hour })
    }
}

/// Why a record is not a page view (the job's `--on-bad-record` policy decides what happens to it).
pub type DecodeError = serde_json::Error;

/// A view as the dataflow keeps it: `(hour, page, user)`, the hour being its first millisecond.
pub type HourlyView = (u64, String, u64);

/// Decodes a record into its [`HourlyView`], its event time, and +1.
pub fn decode(record: &Record) -> Result<(HourlyView, u64, Diff), DecodeError> {
    let view: View = serde_json::from_slice(record.value.as_deref().unwrap_or(b""))?;
    Ok(((view.ts - view.ts % HOUR_MS, view.page, view.user), view.ts, 1))
}

/// The input: page views, read from topic `page-views` unless `--topic views=OTHER` says otherwise.
pub const VIEWS: Input<HourlyView, DecodeError> = Input {
    name: "views",
    topic: "page-views",
    about: "JSON page views {ts, page, user}",
    decode,
    // Counts depend on the accumulated views only, not on when each arrived: a checkpoint may
    // merge everything before its frontier.
    retention: Retention::Collapse,
};

/// Page views per page per hour: `kappa replay --pipeline page-views`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageViews;

impl Pipeline for PageViews {
    type Output = PageHour;
    fn name(&self) -> &str {
        "page-views"
    }
    fn about(&self) -> &str {
        "per page and hour, its views and distinct visitors"
    }
    fn inputs(&self) -> Vec<InputInfo> {
        vec![VIEWS.info()]
    }
    fn output_about(&self) -> &str {
        "{page, hour, views, visitors}, keyed by page and hour"
    }
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, PageHour>> {
        let views = inputs.read(&VIEWS)?;
        let counted = views.clone().map(|(hour, page, _user)| (page, hour)).count();
        let visitors = views.distinct().map(|(hour, page, _user)| (page, hour)).count();
        Ok(counted.join(visitors).map(|((page, hour), (views, visitors))| PageHour {
            page,
            hour,
            views: views as u64,
            visitors: visitors as u64,
        }))
    }
}

/// The batch reference: page views per page per hour over `views`, by the definition, in plain
/// Rust. [`PageViews`] must equal it at every completed time (`tests/harness.rs`).
pub fn reference<'a>(views: impl IntoIterator<Item = &'a View>) -> Vec<PageHour> {
    let mut hours: BTreeMap<(String, u64), (u64, BTreeSet<u64>)> = BTreeMap::new();
    for view in views {
        let (count, users) = hours.entry((view.page.clone(), view.ts / HOUR_MS * HOUR_MS)).or_default();
        *count += 1;
        users.insert(view.user);
    }
    hours
        .into_iter()
        .map(|((page, hour), (views, users))| PageHour { page, hour, views, visitors: users.len() as u64 })
        .collect()
}
