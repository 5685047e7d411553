//! Genres, creators, items and users with their latent structure.

use crate::alias::Alias;
use crate::{World, WorldConfig};
use cascade_core::{ItemRecord, Timestamp, UserRecord, Value};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Pareto, StandardNormal};

pub(crate) const DAY_MS: i64 = 86_400_000;

const GENRE_NAMES: [&str; 18] = [
    "rock",
    "pop",
    "jazz",
    "electronic",
    "hip_hop",
    "classical",
    "folk",
    "metal",
    "soul",
    "country",
    "blues",
    "reggae",
    "ambient",
    "latin",
    "punk",
    "funk",
    "indie",
    "soundtrack",
];

const ADJECTIVES: [&str; 20] = [
    "Silent", "Golden", "Midnight", "Electric", "Broken", "Endless", "Hidden", "Crimson", "Wild", "Lonely", "Bright",
    "Frozen", "Distant", "Velvet", "Restless", "Paper", "Neon", "Quiet", "Burning", "Hollow",
];

const NOUNS: [&str; 20] = [
    "River", "Dream", "City", "Garden", "Signal", "Heart", "Road", "Mirror", "Ocean", "Machine", "Light", "Storm",
    "Echo", "Harbor", "Forest", "Letter", "Engine", "Sky", "Window", "Stranger",
];

const TITLE_SUFFIXES: [&str; 4] = [" (Live)", " (Remastered)", " II", " Vol. 2"];

const COUNTRIES: [&str; 18] =
    ["US", "IN", "BR", "GB", "DE", "FR", "JP", "MX", "CA", "ES", "IT", "KR", "NL", "SE", "AU", "PL", "NG", "AR"];

const OCCUPATIONS: [&str; 15] = [
    "student",
    "engineer",
    "teacher",
    "artist",
    "healthcare",
    "sales",
    "writer",
    "retired",
    "self_employed",
    "scientist",
    "lawyer",
    "homemaker",
    "technician",
    "executive",
    "unemployed",
];

const GENDERS: [(&str, f64); 3] = [("female", 0.48), ("male", 0.48), ("non_binary", 0.04)];

/// Share of items released before the window.
const PRE_WINDOW_SHARE: f64 = 0.6;
/// Share of items that churn during the window.
const CHURN_SHARE: f64 = 0.03;
const PRICED_SHARE: f64 = 0.4;

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn gaussian(rng: &mut StdRng, dim: usize, sd: f32) -> Vec<f32> {
    (0..dim).map(|_| rng.sample::<f32, _>(StandardNormal) * sd).collect()
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = dot(&v, &v).sqrt();
    if norm > 1e-9 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
        v[0] = 1.0;
    }
    v
}

fn add_scaled(acc: &mut [f32], v: &[f32], scale: f32) {
    acc.iter_mut().zip(v).for_each(|(a, x)| *a += x * scale);
}

/// Mean of the given rows of `vectors`, scaled by `weight`, added to `acc`.
fn add_mean(acc: &mut [f32], vectors: &[Vec<f32>], rows: &[usize], weight: f32) {
    if rows.is_empty() {
        return;
    }
    let scale = weight / rows.len() as f32;
    for &r in rows {
        add_scaled(acc, &vectors[r], scale);
    }
}

/// Index drawn with probability proportional to `weights` (linear scan, for short lists).
fn pick_weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// Up to `k` distinct indices drawn by weight without replacement.
fn pick_distinct(rng: &mut StdRng, weights: &[f64], k: usize) -> Vec<usize> {
    let mut weights = weights.to_vec();
    let mut out = Vec::with_capacity(k);
    while out.len() < k && weights.iter().any(|w| *w > 0.0) {
        let i = pick_weighted(rng, &weights);
        weights[i] = 0.0;
        out.push(i);
    }
    out
}

fn zipf_weights(n: usize, exponent: f64) -> Vec<f64> {
    (0..n).map(|k| 1.0 / (k as f64 + 1.0).powf(exponent)).collect()
}

/// Builds everything but the events.
pub(crate) fn build(cfg: &WorldConfig) -> World {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n_genres = cfg.genres.max(1);
    let n_creators = cfg.creators.max(1);
    let dim = cfg.latent_dim.max(1);
    let noise_sd = 1.0 / (dim as f32).sqrt();
    let start = cfg.start.millis();
    let end = cfg.end().millis();

    // Genres and creators.
    let genre_names: Vec<String> =
        (0..n_genres).map(|k| GENRE_NAMES.get(k).map_or_else(|| format!("genre_{k}"), |s| (*s).to_string())).collect();
    let genre_weights = zipf_weights(n_genres, 0.6);
    let genre_alias = Alias::new(&genre_weights);
    let genre_vec: Vec<Vec<f32>> = (0..n_genres).map(|_| normalized(gaussian(&mut rng, dim, 1.0))).collect();
    let creator_genre: Vec<usize> = (0..n_creators).map(|_| genre_alias.sample(&mut rng)).collect();
    let creator_style: Vec<Vec<f32>> = (0..n_creators).map(|_| gaussian(&mut rng, dim, noise_sd)).collect();
    let creator_weights = zipf_weights(n_creators, 1.1);
    let creator_alias = Alias::new(&creator_weights);

    // Items.
    let n_items = cfg.items;
    let mut ranks: Vec<usize> = (0..n_items).collect();
    ranks.shuffle(&mut rng);
    let item_popularity: Vec<f64> = ranks.iter().map(|&r| 1.0 / (r as f64 + 1.0)).collect();
    let price_dist = LogNormal::new(9.0f64.ln(), 0.8).expect("valid log-normal");
    let mut items = Vec::with_capacity(n_items);
    let mut item_vec = Vec::with_capacity(n_items);
    let mut item_genre_sets = Vec::with_capacity(n_items);
    let mut item_creator = Vec::with_capacity(n_items);
    let mut item_price = Vec::with_capacity(n_items);
    let mut item_released_at = Vec::with_capacity(n_items);
    let mut item_unavailable_from = Vec::with_capacity(n_items);
    for (i, &rank) in ranks.iter().enumerate() {
        // The most popular item is always live, so that every instant has a choice.
        let anchor = rank == 0;
        let creator = creator_alias.sample(&mut rng);
        let primary = if rng.random_bool(0.75) { creator_genre[creator] } else { genre_alias.sample(&mut rng) };
        let mut genres = vec![primary];
        let extra = pick_weighted(&mut rng, &[0.4, 0.4, 0.2]);
        for _ in 0..extra * 4 {
            if genres.len() > extra {
                break;
            }
            let g = genre_alias.sample(&mut rng);
            if !genres.contains(&g) {
                genres.push(g);
            }
        }
        let mut v = gaussian(&mut rng, dim, 0.35 * noise_sd);
        add_mean(&mut v, &genre_vec, &genres, 1.0);
        add_scaled(&mut v, &creator_style[creator], 0.4);
        let v = normalized(v);

        let released = if anchor || end <= start || rng.random_bool(PRE_WINDOW_SHARE) {
            (start - rng.random_range(1..=730 * DAY_MS)).max(0)
        } else {
            rng.random_range(start..end)
        };
        let churn_from = start.max(released) + 1;
        let unavailable_from = (!anchor && churn_from < end && rng.random_bool(CHURN_SHARE))
            .then(|| Timestamp(rng.random_range(churn_from..end)));
        let price =
            rng.random_bool(PRICED_SHARE).then(|| (price_dist.sample(&mut rng).max(0.49) * 100.0).round() / 100.0);
        let mut title = format!(
            "{} {}",
            ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
            NOUNS[rng.random_range(0..NOUNS.len())]
        );
        if rng.random_bool(0.2) {
            title.push_str(TITLE_SUFFIXES[rng.random_range(0..TITLE_SUFFIXES.len())]);
        }

        // Attributes sorted by name, as validation produces them.
        let mut attributes = vec![
            ("creator".to_string(), Value::String(format!("c{creator}"))),
            ("genres".to_string(), Value::StringList(genres.iter().map(|&g| genre_names[g].clone()).collect())),
        ];
        if let Some(p) = price {
            attributes.push(("price".to_string(), Value::Float(p)));
        }
        attributes.push(("released_at".to_string(), Value::Timestamp(Timestamp(released))));
        attributes.push(("title".to_string(), Value::String(title)));
        items.push(ItemRecord {
            id: format!("i{i}"),
            attributes,
            available: unavailable_from.is_none(),
            created_at: Some(Timestamp(released)),
            deleted: false,
            updated_at: unavailable_from.unwrap_or(Timestamp(released)),
        });
        item_vec.push(v);
        item_genre_sets.push(genres);
        item_creator.push(creator);
        item_price.push(price);
        item_released_at.push(Timestamp(released));
        item_unavailable_from.push(unavailable_from);
    }

    // Users. Each age group prefers a random third of the genres.
    let group_boost: Vec<Vec<f64>> =
        (0..3).map(|_| (0..n_genres).map(|_| if rng.random_bool(0.33) { 3.0 } else { 1.0 }).collect()).collect();
    let activity_dist = Pareto::new(1.0f64, 1.2).expect("valid Pareto");
    let age_dist = Normal::new(33.0f64, 12.0).expect("valid normal");
    let country_weights = zipf_weights(COUNTRIES.len(), 1.0);
    let gender_weights: Vec<f64> = GENDERS.iter().map(|(_, w)| *w).collect();
    let n_users = cfg.users;
    let mut users = Vec::with_capacity(n_users);
    let mut user_taste = Vec::with_capacity(n_users);
    let mut user_activity = Vec::with_capacity(n_users);
    let mut user_fav_genres = Vec::with_capacity(n_users);
    let mut user_fav_creators = Vec::with_capacity(n_users);
    for u in 0..n_users {
        let activity: f64 = activity_dist.sample(&mut rng).min(1000.0);
        let age = rng.random_bool(0.9).then(|| age_dist.sample(&mut rng).round().clamp(13.0, 80.0) as i64);
        let group = match age {
            Some(a) if a < 25 => 0,
            Some(a) if a < 45 => 1,
            Some(_) => 2,
            None => rng.random_range(0..3),
        };
        let weights: Vec<f64> = genre_weights.iter().zip(&group_boost[group]).map(|(w, b)| w * b).collect();
        let n_fav = 1 + pick_weighted(&mut rng, &[0.4, 0.4, 0.2]);
        let fav_genres = pick_distinct(&mut rng, &weights, n_fav);
        let creator_pref: Vec<f64> = creator_weights
            .iter()
            .zip(&creator_genre)
            .map(|(w, g)| if fav_genres.contains(g) { *w } else { 0.0 })
            .collect();
        let creator_pref = if creator_pref.iter().any(|w| *w > 0.0) { creator_pref } else { creator_weights.clone() };
        let n_fav = 1 + pick_weighted(&mut rng, &[0.5, 0.3, 0.2]);
        let fav_creators = pick_distinct(&mut rng, &creator_pref, n_fav);
        let mut taste = gaussian(&mut rng, dim, 0.4 * noise_sd);
        add_mean(&mut taste, &genre_vec, &fav_genres, 1.0);
        add_mean(&mut taste, &creator_style, &fav_creators, 0.4);
        let taste = normalized(taste);

        let mut attributes = Vec::with_capacity(4);
        if let Some(a) = age {
            attributes.push(("age".to_string(), Value::Int(a)));
        }
        if rng.random_bool(0.95) {
            let c = COUNTRIES[pick_weighted(&mut rng, &country_weights)];
            attributes.push(("country".to_string(), Value::String(c.to_string())));
        }
        if rng.random_bool(0.92) {
            let g = GENDERS[pick_weighted(&mut rng, &gender_weights)].0;
            attributes.push(("gender".to_string(), Value::String(g.to_string())));
        }
        if rng.random_bool(0.6) {
            let o = OCCUPATIONS[rng.random_range(0..OCCUPATIONS.len())];
            attributes.push(("occupation".to_string(), Value::String(o.to_string())));
        }
        users.push(UserRecord { id: format!("u{u}"), attributes, updated_at: cfg.start });
        user_taste.push(taste);
        user_activity.push(activity);
        user_fav_genres.push(fav_genres);
        user_fav_creators.push(fav_creators);
    }

    World {
        config: cfg.clone(),
        items,
        users,
        events: Vec::new(),
        genre_names,
        genre_vec,
        creator_genre,
        user_taste,
        user_activity,
        user_fav_genres,
        user_fav_creators,
        item_vec,
        item_genres: item_genre_sets.iter().map(|g| g[0]).collect(),
        item_genre_sets,
        item_creator,
        item_popularity,
        item_price,
        item_released_at,
        item_unavailable_from,
    }
}
