use cascade_core::ErrorKind;
use cascade_registry::{Error, ManifestDraft, ModelEntry, Registry, Trial};

fn draft(artifact: &str) -> ManifestDraft {
    let mut d = ManifestDraft::default();
    d.data.rows = 10;
    d.models.push(ModelEntry {
        name: "als".into(),
        kind: "als".into(),
        params: serde_json::json!({"factors": 64}),
        artifacts: vec![artifact.into()],
    });
    d.metrics.entry("als".into()).or_default().insert("ndcg_at_10".into(), 0.27);
    d.search.push(Trial {
        model: "als".into(),
        params: serde_json::json!({"reg": 1}),
        metric: "ndcg_at_10".into(),
        value: 0.2,
        chosen: true,
    });
    d
}

#[test]
fn versions_are_monotone_and_manifests_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    for expected in 1..=3 {
        let mut b = reg.begin().unwrap();
        b.add_artifact("als.bin", &[expected as u8; 100]).unwrap();
        let m = b.commit(draft("als.bin")).unwrap();
        assert_eq!(m.version, expected);
    }
    let list = Registry::open(dir.path()).unwrap().list().unwrap();
    assert_eq!(list.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2, 3]);
    let b = reg.get(2).unwrap();
    assert_eq!(b.manifest.draft, draft("als.bin"));
    assert_eq!(std::fs::read(b.artifact("als.bin").unwrap()).unwrap(), vec![2u8; 100]);
    assert_eq!(reg.latest().unwrap().unwrap().manifest.version, 3);
    let err = reg.get(9).unwrap_err();
    assert!(matches!(err, Error::NotFound(9)), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn uncommitted_bundles_leave_nothing_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    {
        let mut b = reg.begin().unwrap();
        b.add_artifact("x.bin", b"x").unwrap();
    }
    assert!(reg.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    let mut b = reg.begin().unwrap();
    let err = b.add_artifact("../escape", b"x").unwrap_err();
    assert!(matches!(err, Error::BadName(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(matches!(b.add_artifact("manifest.json", b"x"), Err(Error::BadName(_))));
    let err = b.commit(draft("missing.bin")).unwrap_err();
    assert!(err.to_string().contains("never added"), "{err}");
}

#[test]
fn tampered_artifacts_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let mut b = reg.begin().unwrap();
    b.add_artifact("als.bin", b"factors").unwrap();
    b.commit(draft("als.bin")).unwrap();
    let bundle = reg.get(1).unwrap();
    std::fs::write(bundle.dir.join("als.bin"), b"factorz").unwrap();
    let err = bundle.artifact("als.bin").unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[test]
fn data_hash_is_order_and_boundary_sensitive() {
    use cascade_registry::DataHasher;
    let h = |rows: &[&[&[u8]]]| {
        let mut d = DataHasher::default();
        rows.iter().for_each(|r| d.row(r));
        d.finish()
    };
    let a: &[&[u8]] = &[b"ab", b"c"];
    let b: &[&[u8]] = &[b"a", b"bc"];
    assert_ne!(h(&[a]), h(&[b]));
    assert_ne!(h(&[a, b]), h(&[b, a]));
    assert_eq!(h(&[a, b]), h(&[a, b]));
}
