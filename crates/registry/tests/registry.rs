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

fn committed(reg: &Registry, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let mut b = reg.begin().unwrap();
            b.add_artifact("als.bin", &[i as u8; 10]).unwrap();
            b.commit(draft("als.bin")).unwrap().version
        })
        .collect()
}

fn actor(why: &str) -> cascade_registry::Actor {
    cascade_registry::Actor::new("cli:test", Some(why.into()))
}

#[test]
fn aliases_move_with_history_and_roll_back_along_it() {
    use cascade_registry::{CHAMPION, MoveKind, RECOMMENDER};
    let dir = tempfile::tempdir().unwrap();
    let audit = cascade_store::AuditLog::new(dir.path());
    let reg = Registry::open(dir.path().join("registry")).unwrap().with_audit(audit.clone());
    let v = committed(&reg, 3);
    assert_eq!(reg.alias(RECOMMENDER, CHAMPION).unwrap(), None);
    for &version in &v {
        reg.set_alias(RECOMMENDER, CHAMPION, version, &actor("trained")).unwrap();
    }
    assert_eq!(reg.alias(RECOMMENDER, CHAMPION).unwrap(), Some(v[2]));
    assert_eq!(reg.resolve(RECOMMENDER, CHAMPION).unwrap().manifest.version, v[2]);
    // One step back along the alias's own history, then another.
    let m = reg.rollback_alias(RECOMMENDER, CHAMPION, &actor("bad")).unwrap();
    assert_eq!((m.kind, m.from, m.to), (MoveKind::Rollback, Some(v[2]), Some(v[1])));
    reg.rollback_alias(RECOMMENDER, CHAMPION, &actor("worse")).unwrap();
    assert_eq!(reg.alias(RECOMMENDER, CHAMPION).unwrap(), Some(v[0]));
    let err = reg.rollback_alias(RECOMMENDER, CHAMPION, &actor("again")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // The history holds every move with who, from, to and why; the audit log too.
    let history = reg.alias_history(RECOMMENDER, Some(CHAMPION)).unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!((history[0].from, history[0].to, history[0].who.as_str()), (None, Some(v[0]), "cli:test"));
    assert_eq!(history[4].why.as_deref(), Some("worse"));
    let entries = audit.read(&cascade_store::AuditQuery { limit: 100, ..Default::default() }).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].record.action, "alias.rollback");
    assert_eq!(entries[0].record.target, "recommender@champion");
    // A second registry handle sees the same state.
    let again = Registry::open(dir.path().join("registry")).unwrap();
    assert_eq!(again.aliases(RECOMMENDER).unwrap().get(CHAMPION), Some(&v[0]));
}

#[test]
fn bad_moves_are_refused_and_change_nothing() {
    use cascade_registry::RECOMMENDER;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let v = committed(&reg, 1)[0];
    let err = reg.set_alias(RECOMMENDER, "latest", v, &actor("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(reg.set_alias(RECOMMENDER, "champion", 99, &actor("x")).unwrap_err().kind(), ErrorKind::NotFound);
    let err = reg.set_alias("fraud", "champion", v, &actor("x")).unwrap_err();
    assert!(err.to_string().contains("belongs to model family `recommender`"), "{err}");
    assert_eq!(reg.rollback_alias(RECOMMENDER, "champion", &actor("x")).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(reg.alias_history(RECOMMENDER, None).unwrap().is_empty());
}

#[test]
fn retention_never_deletes_what_an_alias_or_its_history_names() {
    use cascade_registry::RECOMMENDER;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let v = committed(&reg, 6);
    reg.set_alias(RECOMMENDER, "champion", v[0], &actor("first")).unwrap();
    reg.set_alias(RECOMMENDER, "champion", v[2], &actor("better")).unwrap();
    // Keep the newest two, and v1 and v3 for the alias and its history.
    let deleted = reg.prune(2).unwrap();
    assert_eq!(deleted, vec![v[1], v[3]]);
    let left: Vec<u64> = reg.list().unwrap().iter().map(|m| m.version).collect();
    assert_eq!(left, vec![v[0], v[2], v[4], v[5]]);
    reg.rollback_alias(RECOMMENDER, "champion", &actor("back")).unwrap();
    assert_eq!(reg.resolve(RECOMMENDER, "champion").unwrap().manifest.version, v[0]);
    // Versions keep increasing after a deletion.
    assert_eq!(committed(&reg, 1)[0], v[5] + 1);
}
