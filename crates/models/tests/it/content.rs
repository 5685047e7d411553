use cascade_models::{ContentBased, ContentParams, Retriever, recency_weights};

fn tokens(list: &[&str]) -> Vec<(String, f32)> {
    list.iter().map(|t| ((*t).to_string(), 1.0)).collect()
}

fn catalogue() -> Vec<Vec<(String, f32)>> {
    vec![
        tokens(&["genre:comedy", "creator:ava", "title:summer"]),
        tokens(&["genre:comedy", "creator:bo", "title:night"]),
        tokens(&["genre:drama", "creator:cy", "title:rain"]),
        tokens(&["genre:drama", "creator:ava", "title:winter"]),
        tokens(&["genre:horror", "creator:di", "title:night"]),
    ]
}

#[test]
fn cold_start_ranks_same_genre_items_first() {
    let mut model = ContentBased::fit(&catalogue(), &ContentParams::default()).unwrap();
    // Brand-new items with no interactions at all.
    let new_drama = model.add_item(&tokens(&["genre:drama", "creator:zed", "title:unknown-word"]));
    let new_comedy = model.add_item(&tokens(&["genre:comedy", "creator:zed"]));
    assert_eq!((new_drama, new_comedy, model.n_items()), (5, 6, 7));
    // A user with a single comedy interaction.
    let recs = model.recommend(0, (&[1], &[1.0]), 3, true);
    let ids: Vec<u32> = recs.iter().map(|r| r.0).collect();
    assert!(ids[..2].contains(&0) && ids[..2].contains(&6), "{recs:?}");
    let pos = |i: u32| ids.iter().position(|&x| x == i).unwrap_or(usize::MAX);
    assert!(pos(6) < pos(5));
    // Scores are cosines: an item against itself alone scores 1.
    let mut out = vec![0f32; model.n_items()];
    model.score_user(0, (&[2], &[1.0]), &mut out);
    assert!((out[2] - 1.0).abs() < 1e-6);
    assert!(out.iter().all(|&s| s <= 1.0 + 1e-6));
}

#[test]
fn recent_items_can_weigh_more() {
    let model = ContentBased::fit(&catalogue(), &ContentParams { idf: false }).unwrap();
    // Oldest first: a comedy, then a drama; with a short half-life the drama dominates.
    let history = [1u32, 2];
    let w = recency_weights(2, 0.5);
    assert_eq!(w, vec![0.25, 1.0]);
    let recs = model.recommend(0, (&history, &w), 1, true);
    assert_eq!(recs[0].0, 3);
    let flat = model.recommend(0, (&history, &[1.0, 1.0]), 2, true);
    assert!(flat.iter().any(|r| r.0 == 0));
    assert!(ContentBased::fit(&[vec![("x".into(), f32::NAN)]], &ContentParams::default()).is_err());
}

#[test]
fn catalogue_scoring_equals_per_item_scoring_for_narrow_and_wide_items() {
    // Narrow items (scored as padded rows) and, in the second catalogue, one item wider than
    // the rows allow (scored item by item): the same values as scoring items one at a time.
    let narrow: Vec<Vec<(String, f32)>> = (0..120)
        .map(|i| {
            let mut t = vec![(format!("genre:{}", i % 7), 1.0), (format!("creator:{}", i % 31), 1.0)];
            if i % 3 == 0 {
                t.push((format!("title:{}", i % 11), 0.5));
            }
            t
        })
        .collect();
    let mut wide = narrow.clone();
    wide[5] = (0..12).map(|j| (format!("tag:{j}"), 1.0 + j as f32)).collect();
    for items in [narrow, wide] {
        let model = ContentBased::fit(&items, &ContentParams::default()).unwrap();
        let all: Vec<u32> = (0..model.n_items() as u32).collect();
        for history in [&[0u32][..], &[1, 8, 50], &[3, 4, 5, 6, 7, 100, 119], &[]] {
            let w = recency_weights(history.len(), 2.0);
            let mut scores = vec![f32::NAN; model.n_items()];
            model.score_user(0, (history, &w), &mut scores);
            let mut each = vec![f32::NAN; all.len()];
            model.score_items(0, (history, &w), &all, &mut each);
            assert_eq!(scores, each, "{history:?}");
            let full = cascade_models::top_k(&scores, 40, history);
            assert_eq!(model.recommend(0, (history, &w), 40, true), full);
        }
    }
}
