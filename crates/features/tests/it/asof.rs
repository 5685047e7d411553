//! `as_of_join` against a brute-force oracle: one answer per label row, the newest row of the
//! key strictly before `T` (ties: the later table row), within the TTL, never a row at or after `T`.

use cascade_features::as_of_join;
use proptest::prelude::*;

fn oracle(lk: &[u64], lt: &[i64], tk: &[u64], tt: &[i64], ttl: i64) -> Vec<Option<u32>> {
    (0..lk.len())
        .map(|i| {
            let mut best: Option<usize> = None;
            for r in 0..tk.len() {
                if tk[r] == lk[i] && tt[r] < lt[i] && best.is_none_or(|b| tt[r] >= tt[b]) {
                    best = Some(r);
                }
            }
            best.filter(|&b| ttl <= 0 || tt[b] >= lt[i] - ttl).map(|b| b as u32)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn as_of_join_matches_the_oracle(
        labels in prop::collection::vec((0u64..6, 0i64..40), 0..60),
        table in prop::collection::vec((0u64..6, 0i64..40), 0..80),
        ttl in prop_oneof![Just(0i64), 1i64..20],
        presorted in any::<bool>(),
    ) {
        let mut table = table;
        if presorted {
            table.sort();
        }
        let (lk, lt): (Vec<u64>, Vec<i64>) = labels.iter().copied().unzip();
        let (tk, tt): (Vec<u64>, Vec<i64>) = table.iter().copied().unzip();
        let got = as_of_join(&lk, &lt, &tk, &tt, ttl);
        prop_assert_eq!(got.len(), labels.len());
        for (i, g) in got.iter().enumerate() {
            if let Some(r) = g {
                let r = *r as usize;
                prop_assert!(tk[r] == lk[i] && tt[r] < lt[i], "row {} at {} joined to a label at {}", r, tt[r], lt[i]);
            }
        }
        prop_assert_eq!(got, oracle(&lk, &lt, &tk, &tt, ttl));
    }
}

#[test]
fn ties_ttl_and_missing_keys() {
    // Key 1: rows at 5, 5 (the later wins), 10; key 2: one row at 3.
    let (tk, tt) = ([1, 1, 1, 2], [5, 5, 10, 3]);
    let (lk, lt) = ([1, 1, 1, 2, 3, 1], [5, 6, 11, 20, 9, 30]);
    assert_eq!(as_of_join(&lk, &lt, &tk, &tt, 0), [None, Some(1), Some(2), Some(3), None, Some(2)]);
    // TTL 10: the row at 10 is still valid at 20 (= T − ttl), not at 21.
    assert_eq!(as_of_join(&[1, 1], &[20, 21], &tk, &tt, 10), [Some(2), None]);
}
