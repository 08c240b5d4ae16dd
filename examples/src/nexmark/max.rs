//! Per-key maxima as the queries need them (q4's final prices, q5's and q7's per-window maxima).

use kappa_engine::Collection;

/// Per key, the largest value. In two levels (key and value bucket, then key) so that a change
/// re-reads one bucket of a key's values and the key's bucket maxima, not every value of the key:
/// a window or a hot auction holds thousands.
pub(super) fn max_by_key<'s>(pairs: Collection<'s, (u64, u64)>) -> Collection<'s, (u64, u64)> {
    pairs
        .map(|(key, value)| ((key, value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58), value))
        // Values are sorted ascending: the last is the largest.
        .reduce(|_key_bucket, values, out| out.push((*values[values.len() - 1].0, 1)))
        .map(|((key, _bucket), value)| (key, value))
        .reduce(|_key, values, out| out.push((*values[values.len() - 1].0, 1)))
}
