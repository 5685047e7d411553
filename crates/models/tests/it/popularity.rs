use cascade_models::{Csr, Popularity, PopularityKind, Retriever};

#[test]
fn ties_go_to_the_smaller_item_index() {
    // Item counts: i0 1, i1 2, i2 2, i3 0, i4 2.
    let m = Csr::from_triplets(
        3,
        5,
        vec![(0, 1, 1.0), (1, 1, 1.0), (0, 2, 5.0), (2, 2, 1.0), (1, 4, 1.0), (2, 4, 1.0), (0, 0, 1.0)],
    );
    let pop = Popularity::fit(&m);
    assert_eq!(pop.scores(), &[1.0, 2.0, 2.0, 0.0, 2.0]);
    assert_eq!(pop.ranked(), vec![1, 2, 4, 0, 3]);
    assert_eq!(pop.recommend(7, (&[2], &[1.0]), 3, true), vec![(1, 2.0), (4, 2.0), (0, 1.0)]);
    assert_eq!(pop.recommend(7, (&[2], &[1.0]), 2, false), vec![(1, 2.0), (2, 2.0)]);
    assert_eq!(pop.recommend_all(&m, &[0, 1, 2, 9], 2), vec![vec![4, 3], vec![2, 0], vec![1, 0], vec![1, 2]]);
    // Weighted: sums of values.
    assert_eq!(Popularity::fit_weighted(&m).ranked()[0], 2);
}

#[test]
fn decayed_counts_halve_every_half_life() {
    let rows = [(0, 0, 100), (1, 0, 100), (0, 1, 200), (2, 2, 250)];
    let pop = Popularity::fit_decayed_rows(3, &rows, 200, 100.0).unwrap();
    let s = pop.scores();
    assert!((s[0] - 1.0).abs() < 1e-6, "two interactions one half-life old: {}", s[0]);
    assert!((s[1] - 1.0).abs() < 1e-6);
    assert!((s[2] - 1.0).abs() < 1e-6, "future interactions count 1");
    assert_eq!(pop.ranked(), vec![0, 1, 2]);
    assert!(matches!(pop.kind(), PopularityKind::Decayed { now: 200, .. }));
    // The CSR form takes timestamps parallel to the stored entries.
    let m = Csr::from_triplets(3, 3, vec![(0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (2, 2, 1.0)]);
    let ts = [100, 200, 100, 250];
    assert_eq!(Popularity::fit_decayed(&m, &ts, 200, 100.0).unwrap().scores(), s);
    assert!(Popularity::fit_decayed(&m, &ts[..2], 200, 100.0).is_err());
    assert!(Popularity::fit_decayed_rows(3, &rows, 200, 0.0).is_err());
}

#[test]
fn segments_rank_within_the_segment() {
    let pop = Popularity::from_scores(vec![5.0, 1.0, 3.0, 3.0, 9.0]);
    // Segment 0 = {0, 2, 3}, segment 1 = {1, 3, 4}, segment 2 = {}.
    let pop = pop.with_segments(&[vec![0], vec![1], vec![0], vec![1, 0, 0], vec![1]]).unwrap();
    assert_eq!(pop.n_segments(), 2);
    assert_eq!(pop.segment(0), &[0, 2, 3]);
    assert_eq!(pop.segment(1), &[4, 3, 1]);
    assert_eq!(pop.recommend_in_segment(0, 2, &[0]), vec![(2, 3.0), (3, 3.0)]);
    assert!(pop.segment(7).is_empty());
    assert!(Popularity::from_scores(vec![1.0]).with_segments(&[]).is_err());
}
