//! Property tests of Kappa's pipelines against plain-Rust batch references.
//!
//! The tests live in `tests/`; this library holds what they share: the reference semantics of
//! dataflow time ([`reference_times`]), written independently of the engine's implementation.
#![forbid(missing_docs)]

/// Dataflow times by the definition: for each partition, in offset order, a record's time is its
/// timestamp raised to the largest timestamp seen before it in that partition minus `lateness_ms`.
///
/// ```
/// assert_eq!(kappa_proptests::reference_times(&[10_000, 2_000, 9_000], 5_000), vec![10_000, 5_000, 9_000]);
/// ```
pub fn reference_times(timestamps: &[u64], lateness_ms: u64) -> Vec<u64> {
    let mut largest: Option<u64> = None;
    timestamps
        .iter()
        .map(|&ts| {
            let floor = largest.map_or(0, |m| m.saturating_sub(lateness_ms));
            largest = Some(largest.map_or(ts, |m| m.max(ts)));
            ts.max(floor)
        })
        .collect()
}
