use crate::*;
use std::collections::HashMap;

fn report(cfg: &WorldConfig) {
    let t = std::time::Instant::now();
    let w = World::generate(cfg);
    eprintln!("generated {} in {:?}", w.events.len(), t.elapsed());
    let mut types: HashMap<&str, usize> = HashMap::new();
    for e in &w.events {
        *types.entry(&e.event_type).or_default() += 1;
    }
    eprintln!("types {types:?}");
    let idx: Vec<(usize, usize)> = w
        .events
        .iter()
        .map(|e| (w.user_index(e.user.as_deref().unwrap()).unwrap(), w.item_index(e.item.as_deref().unwrap()).unwrap()))
        .collect();
    let mut ic = vec![0usize; w.items.len()];
    let mut uc = vec![0usize; w.users.len()];
    for &(u, i) in &idx {
        ic[i] += 1;
        uc[u] += 1;
    }
    ic.sort_unstable_by(|a, b| b.cmp(a));
    uc.sort_unstable_by(|a, b| b.cmp(a));
    let top = |v: &[usize]| v[..v.len() / 10].iter().sum::<usize>() as f64 / v.iter().sum::<usize>() as f64;
    eprintln!("top10 items {:.3} users {:.3}", top(&ic), top(&uc));
    // genre enrichment
    let ng = w.genre_names.len();
    let mut ratios = vec![];
    let mut per_user: Vec<Vec<usize>> = vec![vec![]; w.users.len()];
    for &(u, i) in &idx {
        per_user[u].push(i);
    }
    for (u, items) in per_user.iter().enumerate() {
        if items.len() < 20 {
            continue;
        }
        let favs = &w.user_fav_genres[u];
        let hit = |i: usize| w.item_genre_sets[i].iter().any(|g| favs.contains(g));
        let share = items.iter().filter(|&&i| hit(i)).count() as f64 / items.len() as f64;
        let base = idx.iter().filter(|&&(_, i)| hit(i)).count() as f64 / idx.len() as f64;
        ratios.push(share / base);
    }
    let _ = ng;
    eprintln!(
        "genre enrichment mean {:.3} min {:.3} n {}",
        ratios.iter().sum::<f64>() / ratios.len() as f64,
        ratios.iter().cloned().fold(f64::MAX, f64::min),
        ratios.len()
    );
    let mut hours = [0usize; 24];
    for e in &w.events {
        hours[(e.ts.millis() / 3_600_000 % 24) as usize] += 1;
    }
    eprintln!("hours {hours:?}");
    let mean_aff = |ty: &str| {
        let v: Vec<f32> = w
            .events
            .iter()
            .zip(&idx)
            .filter(|(e, _)| e.event_type == ty)
            .map(|(_, &(u, i))| w.affinity(u, i))
            .collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    for ty in ["view", "click", "play", "skip", "like", "purchase", "rating"] {
        eprintln!("aff {ty} {:.3}", mean_aff(ty));
    }
    let mut rnd = 0.0;
    let mut n = 0;
    for u in 0..w.users.len() {
        for i in (0..w.items.len()).step_by(7) {
            rnd += w.affinity(u, i);
            n += 1;
        }
    }
    eprintln!("random aff {:.3}", rnd / n as f32);
    let mut stars = [(0.0f32, 0usize); 6];
    for (e, &(u, i)) in w.events.iter().zip(&idx) {
        if let Some(cascade_core::Value::Float(v)) = e.field("value") {
            stars[*v as usize].0 += w.affinity(u, i);
            stars[*v as usize].1 += 1;
        }
    }
    eprintln!("stars {:?}", stars.iter().map(|(s, n)| (s / *n as f32, *n)).collect::<Vec<_>>());
    let mut last: HashMap<usize, i64> = HashMap::new();
    let mut gaps = vec![];
    for (e, &(u, _)) in w.events.iter().zip(&idx) {
        if let Some(p) = last.insert(u, e.ts.millis()) {
            gaps.push(e.ts.millis() - p);
        }
    }
    gaps.sort_unstable();
    let q = |f: f64| gaps[(gaps.len() as f64 * f) as usize] as f64 / 60_000.0;
    eprintln!("gaps min: p10 {:.1} p50 {:.1} p75 {:.1} p90 {:.1} p99 {:.1}", q(0.1), q(0.5), q(0.75), q(0.9), q(0.99));
    let mut s = events_iter(cfg);
    let n = s.by_ref().count();
    eprintln!("stream {n} max_pending {}", s.max_pending());
}

#[test]
fn stats() {
    report(&WorldConfig::small(1));
    report(&WorldConfig::default());
}

#[test]
#[ignore = "benchmark: run with --release"]
fn big() {
    let cfg = WorldConfig { events: 10_000_000, ..WorldConfig::default() };
    let t = std::time::Instant::now();
    let mut s = events_iter(&cfg);
    let mut n = 0usize;
    let mut last = cascade_core::Timestamp(0);
    for e in s.by_ref() {
        assert!(e.ts >= last);
        last = e.ts;
        n += 1;
    }
    eprintln!("{n} in {:?}, max pending {}", t.elapsed(), s.max_pending());
}
