use std::io::Write;

use cascade_models::{
    Als, AlsParams, AnyModel, Bpr, BprParams, ContentBased, ContentParams, Error, ErrorKind, ItemKnn, ItemKnnParams,
    Persist, Popularity, Retriever,
};

use crate::common::{planted, scores};

fn round_trip<M: Persist + Retriever + PartialEq + std::fmt::Debug>(model: &M, history: (&[u32], &[f32])) -> Vec<u8> {
    let mut bytes = Vec::new();
    model.save(&mut bytes).unwrap();
    let back = M::load(&mut bytes.as_slice()).unwrap();
    assert_eq!(&back, model);
    for user in [0, 3, 10_000] {
        let all = scores(model, user, history);
        assert_eq!(scores(&back, user, history), all, "{}", model.name());
        // Scoring a subset (serving's candidates, in any order, some unknown) gives the same values.
        let items: Vec<u32> = (0..all.len() as u32).rev().step_by(2).chain([all.len() as u32 + 5]).collect();
        let mut some = vec![f32::NAN; items.len()];
        model.score_items(user, history, &items, &mut some);
        let expected: Vec<f32> = items.iter().map(|&i| all.get(i as usize).copied().unwrap_or(0.0)).collect();
        assert_eq!(some, expected, "score_items of {}", model.name());
    }
    let any = AnyModel::load(&mut bytes.as_slice()).unwrap();
    assert_eq!(any.retriever().name(), model.name());
    assert_eq!(scores(any.retriever(), 3, history), scores(model, 3, history));
    let mut again = Vec::new();
    any.save(&mut again).unwrap();
    assert_eq!(again, bytes);
    bytes
}

#[test]
fn every_model_round_trips_with_identical_scores() {
    let p = planted(12, 12, 8, 0.5, 9);
    let history = p.train.row(3);
    let als = Als::fit(&p.train, &AlsParams { factors: 5, iterations: 3, ..AlsParams::default() }).unwrap();
    round_trip(&als, history);
    let bpr = Bpr::fit(&p.train, &BprParams { factors: 4, iterations: 3, threads: 1, ..BprParams::default() }).unwrap();
    round_trip(&bpr, history);
    round_trip(&ItemKnn::fit(&p.train, &ItemKnnParams { k: 4 }).unwrap(), history);
    let segs: Vec<Vec<u32>> = (0..16).map(|i| vec![i % 3]).collect();
    round_trip(&Popularity::fit(&p.train).with_segments(&segs).unwrap(), history);
    let items: Vec<Vec<(String, f32)>> = (0..16).map(|i| vec![(format!("genre:{}", i % 4), 1.0)]).collect();
    let mut content = ContentBased::fit(&items, &ContentParams::default()).unwrap();
    content.add_item(&[("genre:1".into(), 2.0)]);
    round_trip(&content, history);
}

#[test]
fn files_round_trip_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("als.model");
    let p = planted(6, 6, 5, 0.5, 10);
    let als = Als::fit(&p.train, &AlsParams { factors: 3, iterations: 2, ..AlsParams::default() }).unwrap();
    als.save_file(&path).unwrap();
    assert_eq!(Als::load_file(&path).unwrap(), als);
    assert!(matches!(AnyModel::load_file(&path).unwrap(), AnyModel::Als(_)));

    let good = std::fs::read(&path).unwrap();
    // Wrong kind.
    let err = Bpr::load(&mut good.as_slice()).unwrap_err();
    assert!(matches!(err, Error::Format(_)), "{err}");
    // Unknown format version.
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let err = Als::load(&mut newer.as_slice()).unwrap_err();
    assert!(matches!(err, Error::Version { found: 99, supported: 1 }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    // Bad magic, truncation, trailing bytes.
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(matches!(Als::load(&mut magic.as_slice()), Err(Error::Format(_))));
    assert!(matches!(Als::load(&mut &good[..good.len() - 1]), Err(Error::Format(_))));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(Als::load(&mut longer.as_slice()), Err(Error::Format(_))));
    // A missing file names its path.
    let missing = dir.path().join("nope.model");
    let err = Als::load_file(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.model"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    // Truncated file on disk names its path too.
    let short = dir.path().join("short.model");
    std::fs::File::create(&short).unwrap().write_all(&good[..20]).unwrap();
    let err = Als::load_file(&short).unwrap_err();
    assert!(err.to_string().contains("short.model"), "{err}");
}
