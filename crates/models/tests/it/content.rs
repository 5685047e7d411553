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
fn recommendations_from_the_profiles_tokens_equal_a_full_scoring() {
    // Genres shared by many items, creators by few, and items sharing nothing with a profile:
    // the zeros follow by index when the profile reaches fewer items than asked for.
    let items: Vec<Vec<(String, f32)>> = (0..120)
        .map(|i| {
            let mut t = vec![(format!("genre:{}", i % 7), 1.0), (format!("creator:{}", i % 31), 1.0)];
            if i % 3 == 0 {
                t.push((format!("title:{}", i % 11), 0.5));
            }
            t
        })
        .collect();
    let model = ContentBased::fit(&items, &ContentParams::default()).unwrap();
    for history in [&[0u32][..], &[1, 8, 50], &[3, 4, 5, 6, 7, 100, 119], &[]] {
        let w = recency_weights(history.len(), 2.0);
        for (k, exclude_seen) in [(3, true), (40, true), (119, false), (200, true)] {
            let mut scores = vec![0f32; model.n_items()];
            model.score_user(0, (history, &w), &mut scores);
            let full = cascade_models::top_k(&scores, k, if exclude_seen { history } else { &[] });
            assert_eq!(model.recommend(0, (history, &w), k, exclude_seen), full, "{history:?}, k {k}");
        }
    }
}
