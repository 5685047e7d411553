use cascade_bundle::LoadedBundle;
use cascade_core::{Config, Record, SystemClock};
use cascade_eval::Split;
use cascade_features::{FeatureSet, OnlineStore};
use cascade_registry::Registry;
use cascade_serving::live::{Live, LiveConfig};
use cascade_serving::pipeline::{Pipeline, Serving, with_ranking_views};
use cascade_serving::{Recommender, RecommenderParts};
use cascade_store::{Store, StoreOptions};
use cascade_testkit::{World, WorldConfig, events_iter};
use cascade_training::dataset::{LogData, from_log};
use cascade_training::ranking::{Catalogue, Retrievers, build_block};
use cascade_training::{TrainOptions, ranking_params, train_bundle};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A project: a synthetic world in a store, a bundle trained from it (with rankers), and the
/// log's records.
struct Trained {
    _dir: tempfile::TempDir,
    config: Config,
    store: Arc<Store>,
    records: Vec<(u64, Record)>,
    data: LogData,
}

async fn trained() -> Trained {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default();
    let store = Arc::new(
        Store::open(dir.path(), StoreOptions::from(&cascade_store::LogConfig::from_config(&config).unwrap())).unwrap(),
    );
    let world = WorldConfig { seed: 7, users: 300, items: 400, events: 30_000, days: 60, ..WorldConfig::default() };
    let catalogue = World::catalogue(&world);
    let records: Vec<Record> = catalogue
        .items
        .iter()
        .cloned()
        .map(Record::Item)
        .chain(catalogue.users.iter().cloned().map(Record::User))
        .chain(events_iter(&world).map(Record::Event))
        .collect();
    for batch in records.chunks(5_000) {
        store.append(batch).await.unwrap();
    }
    let records: Vec<(u64, Record)> = store.read_from(0).collect::<Result<_, _>>().unwrap();
    let data = from_log(&store, &config.interactions().unwrap(), "test".into()).unwrap();
    let registry = Registry::open(store.dir().join("registry")).unwrap();
    let trained = train_bundle(
        &registry,
        &cascade_training::TrainConfig::from_config(&config).unwrap(),
        "test".into(),
        from_log(&store, &config.interactions().unwrap(), "test".into()).unwrap(),
        &TrainOptions { tune: false, k: 10, who: "test".into() },
        &|_| {},
    )
    .unwrap();
    assert!(trained.rankers_skipped.is_none(), "{:?}", trained.rankers_skipped);
    Trained { _dir: dir, config, store, records, data }
}

/// The serving side's parts, fed the whole log.
async fn serving_parts(t: &Trained) -> (Arc<Live>, Arc<OnlineStore>) {
    let config = with_ranking_views(&t.config).unwrap();
    let set = FeatureSet::from_config(&config).unwrap();
    let online = Arc::new(
        OnlineStore::open(&cascade_features::FeaturesStoreConfig::from_config(&config).unwrap(), t.store.dir(), set)
            .await
            .unwrap(),
    );
    online.apply(&t.records).await.unwrap();
    let live = Arc::new(Live::new(LiveConfig {
        interactions: t.config.interactions().unwrap().keys().cloned().collect(),
        ..Default::default()
    }));
    live.apply(&t.records);
    (live, online)
}

fn served_items(candidates: &[cascade_bundle::Candidate]) -> Vec<u32> {
    candidates.iter().map(|c| c.item).collect()
}

/// Users with at least `n` distinct interacted items, in id order.
fn warm_users(t: &Trained, n: usize) -> Vec<String> {
    let mut items: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for row in &t.data.rows {
        items.entry(&row.user).or_default().insert(&row.item);
    }
    items.into_iter().filter(|(_, i)| i.len() >= n).map(|(u, _)| u.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_trained_here_serves_through_the_whole_cascade() {
    let t = trained().await;
    let (live, online) = serving_parts(&t).await;
    let parts = RecommenderParts {
        live,
        features: online,
        registry: t.store.dir().join("registry"),
        clock: Arc::new(SystemClock),
        horizon: cascade_core::Horizon::default(),
    };
    // Deadlines far beyond any stage's time here: this test is about the path, not timing (an
    // unoptimised test build on a loaded machine must not fall back).
    let table: toml::Table = toml::from_str("retrieval_ms = 60000\nfeatures_ms = 60000\nranking_ms = 60000").unwrap();
    let pipelines = Pipeline::from_tables(&[("default".to_string(), table)].into()).unwrap();
    let rec = Recommender::new(parts, pipelines, "default".into()).unwrap();
    assert_eq!(rec.reload().unwrap(), Some(1));
    let last = t.data.rows.iter().map(|r| r.ts).max().unwrap();
    for user in warm_users(&t, 10).iter().take(5) {
        let mut request = cascade_api::RecommendationRequest { user: user.clone(), k: Some(10), ..Default::default() };
        request.context.insert("time".into(), serde_json::json!(last + 1));
        let response = rec.recommend(request).await.unwrap();
        assert_eq!(response.path.ranked_by, "heavy", "{:?}", response.path);
        assert!(response.path.fallbacks.is_empty(), "{:?}", response.path.fallbacks);
        assert!(!response.path.cold_start);
        assert!(response.path.candidates > 100, "{}", response.path.candidates);
        assert_eq!(response.items.len(), 10);
        let seen: std::collections::HashSet<&str> =
            t.data.rows.iter().filter(|r| &r.user == user).map(|r| r.item.as_str()).collect();
        assert!(response.items.iter().all(|i| !seen.contains(i.id.as_str())), "a seen item was recommended");
        assert!(response.items.iter().all(|i| (0.0..=1.0).contains(&i.score)), "calibrated probabilities");
    }
}

/// The skew this guards against: the ranker learning from rows built one way and scoring rows
/// built another. For the trained bundle, at the instant just after the log's last interaction,
/// the rows serving builds for a user's candidates must be the rows training builds for that
/// user at the same instant with the same models: same candidates in the same order, same
/// values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_builds_the_feature_rows_training_builds() {
    let t = trained().await;
    let (live, online) = serving_parts(&t).await;
    let registry = Registry::open(t.store.dir().join("registry")).unwrap();
    let bundle = Arc::new(LoadedBundle::load(&registry.latest().unwrap().unwrap()).unwrap());
    let serving = Serving::new(bundle.clone());
    assert!(serving.has_rankers(), "{:?}", serving.ranking_problem);
    let pipelines = Pipeline::from_tables(&BTreeMap::new()).unwrap();
    let pipeline = &pipelines["default"];

    // Training's view: the whole log as one period's history, the bundle's own models as its
    // retrievers, in the order the rankers' layout names them.
    let split = Split::temporal(t.data.rows.clone(), 0.0).unwrap();
    let mut params = ranking_params(&cascade_training::TrainConfig::from_config(&t.config).unwrap(), 10);
    params.quotas.retain(|name, _| bundle.models.contains_key(name));
    let retrievers = Retrievers {
        models: params.quotas.keys().map(|name| (name.clone(), (*bundle.models[name]).clone())).collect(),
    };
    let catalogue = Catalogue { tokens: t.data.tokens.clone(), released_at: t.data.released_at.clone() };
    let now = t.data.rows.iter().map(|r| r.ts).max().unwrap() + 1;

    let users = warm_users(&t, 10);
    assert!(users.len() >= 30, "the world has warm users");
    let mut compared = 0;
    for user in users.iter().take(30) {
        let u = bundle.users.get(user).unwrap();
        let (names, block) = build_block(&split, &[u], &retrievers, &catalogue, &params, 1).unwrap();

        let history = live.history(user);
        let prepared = serving.prepare(Some(user), &history, &[], now, pipeline);
        let (candidates, _) = serving.retrieve(&prepared, pipeline);
        let ids: Vec<&str> = candidates.iter().map(|c| serving.item_id(c.item)).collect();
        let aggregates = serving.read_aggregates(&online, user, &ids, now).await.unwrap();
        let rows = serving.feature_rows(&prepared, &candidates, &aggregates, &live).unwrap();

        // The same candidates in the same order — except where ALS's approximate nearest-neighbour
        // search (serving) and its exact scoring (training) disagree: the tail of a 300-long
        // list from 400 items, and items whose inner products differ in the last float bits.
        // Every difference must come from ALS; rows are compared where there is none (ranks of
        // exactly tied scores follow the candidate order, so rows can differ there).
        let als = bundle.models.keys().position(|n| n == "als");
        let trained: std::collections::HashSet<u32> = block.items.iter().copied().collect();
        let same_list = served_items(&candidates) == block.items;
        if !same_list {
            for c in candidates.iter().filter(|c| !trained.contains(&c.item)) {
                assert!(
                    c.hits.iter().any(|h| Some(h.source) == als),
                    "user {user}: {} served, not by ANN: {:?}",
                    c.item,
                    c.hits
                );
            }
            let served: std::collections::HashSet<u32> = served_items(&candidates).into_iter().collect();
            let differ = served.symmetric_difference(&trained).count();
            assert!(
                differ * 20 <= block.items.len(),
                "user {user}: {differ} of {} candidates differ",
                block.items.len()
            );
            continue;
        }
        // The same rows, value for value.
        compared += 1;
        assert_eq!(rows.len(), block.values.len());
        for (i, (s, t)) in rows.iter().zip(&block.values).enumerate() {
            let same = (s.is_nan() && t.is_nan()) || (s - t).abs() <= 1e-9 * t.abs().max(1.0);
            assert!(
                same,
                "user {user}, row {}, `{}`: served {s}, trained {t}",
                i / names.len(),
                names[i % names.len()]
            );
        }
    }
    // ALS asks the ANN index for 300 of 400 items: its tail is where approximate search and exact
    // scoring part, so some users are compared by their candidates only.
    assert!(compared >= 15, "only {compared} of 30 users had the same candidates in the same order");
}
