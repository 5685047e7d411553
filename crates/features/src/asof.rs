//! Point-in-time join of label rows against *precomputed* feature tables (rows of (entity key,
//! event time, values), e.g. Parquet written by another system): for each label row at `T`, the
//! newest table row of the same key with event time strictly before `T`, and not older than the
//! TTL — Feast's `get_historical_features` semantics with `<` instead of `≤` at `T` (the same
//! point-in-time rule as [`crate::training_set`]).
//!
//! Exactly one output per label row, in label order, duplicates included. Rows of a table with the
//! same key and event time are ordered by their position in the table: the later one wins (as a
//! later write would). Implemented as a sort-merge: both sides sorted by (key, time) — a table
//! already in that order is not re-sorted — then one pass with two cursors, `O((n + m) log)`.

/// A TTL of zero means unbounded (as Feast's `ttl=timedelta(0)`).
///
/// Returns, for every label row `i` (`label_keys[i]`, `label_ts[i]`), the index in the table of
/// the row it joins, or `None`: no row of that key before `T`, or the newest is older than
/// `T − ttl_ms` (`ts < T − ttl` is outside the TTL, `ts = T − ttl` inside, as in Feast).
pub fn as_of_join(
    label_keys: &[u64],
    label_ts: &[i64],
    table_keys: &[u64],
    table_ts: &[i64],
    ttl_ms: i64,
) -> Vec<Option<u32>> {
    assert_eq!(label_keys.len(), label_ts.len(), "label keys and times");
    assert_eq!(table_keys.len(), table_ts.len(), "table keys and times");
    assert!(table_keys.len() <= u32::MAX as usize, "at most 2^32 table rows");
    let labels = sorted_order(label_keys, label_ts);
    let table = sorted_order(table_keys, table_ts);
    let mut out = vec![None; label_keys.len()];
    let mut j = 0; // table[..j] are the rows before the current label in (key, time) order
    for &i in &labels {
        let (k, t) = (label_keys[i as usize], label_ts[i as usize]);
        while j < table.len() {
            let r = table[j] as usize;
            if (table_keys[r], table_ts[r]) < (k, t) {
                j += 1;
            } else {
                break;
            }
        }
        if j > 0 {
            let r = table[j - 1];
            let (rk, rt) = (table_keys[r as usize], table_ts[r as usize]);
            if rk == k && (ttl_ms <= 0 || rt >= t.saturating_sub(ttl_ms)) {
                out[i as usize] = Some(r);
            }
        }
    }
    out
}

/// Indices in (key, time, index) order; the identity when already sorted (the common case for
/// tables written sorted).
fn sorted_order(keys: &[u64], ts: &[i64]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    let sorted = keys.windows(2).zip(ts.windows(2)).all(|(k, t)| (k[0], t[0]) <= (k[1], t[1]));
    if !sorted {
        // Ties broken by index: of equal (key, time) rows, the later one is joined.
        order.sort_unstable_by_key(|&i| (keys[i as usize], ts[i as usize], i));
    }
    order
}
