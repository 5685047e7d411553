//! Seeded synthetic worlds for tests, demos and benchmarks: a catalogue, a user base and a
//! stream of interaction events with a known latent structure a recommender can learn.
//!
//! Everything is deterministic for a given [`WorldConfig`]: the catalogue comes from
//! `StdRng::seed_from_u64(seed)` and the events from a second generator derived from the same
//! seed, so [`World::generate`] and the streaming [`events_iter`] agree event for event.
//!
//! ```
//! use cascade_testkit::{World, WorldConfig, event_json};
//! let world = World::generate(&WorldConfig::small(7));
//! assert_eq!(world.events.len(), 5_000);
//! let schema = cascade_core::Schema::from_config(&cascade_core::Config::default());
//! assert!(schema.validate_event(&event_json(&world.events[0])).is_ok());
//! ```
//!
//! # The generative model
//!
//! **Genres.** `genres` genres (`rock`, `pop`, `jazz`, ..., then `genre_k`) with mildly
//! Zipf-distributed popularity (exponent 0.6). Each genre has a random unit centroid in the
//! `latent_dim`-dimensional taste space.
//!
//! **Creators** (`c0`, `c1`, ...) have a primary genre and a small random style vector. Their
//! catalogue sizes follow a power law: each item picks its creator with weight `1/(k+1)^1.1`.
//!
//! **Items** (`i0`, `i1`, ...) have a title, 1–3 genres (the first is usually their creator's
//! primary genre), a creator, a release time and, for about 40%, a log-normal price. 60% were
//! released during the two years before the window, the rest uniformly inside it (freshness);
//! nobody interacts with an item before its release. About 3% churn: at a random instant inside
//! the window they become unavailable, their record says `available: false` with `updated_at` at
//! that instant, and no event touches them afterwards. An item's latent vector is the normalised
//! mean of its genre centroids plus a share of its creator's style and noise. Its base
//! popularity is Zipf with exponent 1 over a random permutation of the catalogue.
//!
//! **Users** (`u0`, `u1`, ...) have optional age, gender, country and occupation, a
//! Pareto-distributed activity level (shape 1.2, so a few users produce much of the traffic),
//! 1–3 favourite genres (drawn from genre popularity reweighted by a per-age-group preference, so
//! demographics carry a cold-start signal), 1–3 favourite creators of those genres, and a taste
//! vector: the normalised mean of the favourite genres' centroids plus a share of the favourite
//! creators' styles and noise.
//!
//! **Time.** The window `[start, start + days)` is cut into hours. Each hour receives a share of
//! the `events` budget proportional to a time-of-day curve (quiet at 3–6h, peaking in the
//! evening around 20h, all UTC), a 25% weekend bonus and a slight upward trend across the window.
//! An hour's budget is spent in sessions: a session starts at a uniform instant of the hour, has
//! a geometric length (mean about 4 events, all by one user, a minute or two apart), and goes to
//! a user drawn by activity, preferring users who have not had a session in the last 20
//! minutes, so sessions of one user are separated by hours or days.
//!
//! **Choice.** For each event a candidate pool is drawn: 8 items from global popularity, 4 from
//! the popularity within one of the user's favourite genres and 2 from the user's favourite
//! creators. Candidates not released yet or already churned are dropped, and one is chosen with
//! probability proportional to `exp(affinity / 0.15) * freshness`, where affinity is the dot
//! product of the taste and item vectors and freshness boosts items during their first days
//! (`1 + 3 exp(-age / 4 days)`). The result mixes power-law popularity with a softmax over
//! affinity at constant cost per event.
//!
//! **Event types.** With engagement `e = sigmoid((affinity - 0.55) / 0.15)` a freshly chosen
//! item is viewed (most often), clicked, played, skipped (more likely when `e` is low), liked
//! (when high), purchased (priced items, when high) or rated (1–5 stars, increasing with `e`,
//! plus noise). Within a session a view may be followed by a click on the same item, a click by
//! a play or purchase, and a play by a like, each more likely when `e` is high. Fields follow the
//! default schema (`duration_ms`, `position`, `surface`, `completed`, `after_ms`, `price`,
//! `quantity`, `value`).
//!
//! **Output.** Events are sorted by time and numbered `e0`, `e1`, ... in that order. The
//! generator streams: [`events_iter`] keeps only about an hour of pending events in memory.
//! The ground truth (taste and item vectors, favourites, popularity) is public on [`World`] for
//! tests that check a model recovers it.

mod alias;
mod catalogue;
pub mod child;
mod json;
pub mod redis_server;
mod stream;
#[cfg(test)]
mod tests;

pub use json::{event_json, item_json, user_json};
pub use stream::EventStream;

use cascade_core::{Event, ItemRecord, Record, Timestamp, UserRecord};

/// What to generate. Sizes of zero are allowed (no users or no items means no events); zero
/// genres, creators or latent dimensions are treated as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldConfig {
    pub seed: u64,
    pub users: usize,
    pub items: usize,
    /// Exactly this many events are generated.
    pub events: usize,
    /// Start of the event window.
    pub start: Timestamp,
    /// Length of the event window in days.
    pub days: u32,
    pub genres: usize,
    pub creators: usize,
    pub latent_dim: usize,
}

/// 2024-01-01T00:00:00Z.
const DEFAULT_START: Timestamp = Timestamp(1_704_067_200_000);

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 42,
            users: 1000,
            items: 2000,
            events: 100_000,
            start: DEFAULT_START,
            days: 60,
            genres: 18,
            creators: 300,
            latent_dim: 8,
        }
    }
}

impl WorldConfig {
    /// A small world for fast tests: 100 users, 200 items, 5 000 events over 30 days.
    pub fn small(seed: u64) -> Self {
        WorldConfig {
            seed,
            users: 100,
            items: 200,
            events: 5_000,
            start: DEFAULT_START,
            days: 30,
            genres: 12,
            creators: 40,
            latent_dim: 8,
        }
    }

    /// The end of the event window (exclusive).
    pub fn end(&self) -> Timestamp {
        Timestamp(self.start.millis() + i64::from(self.days) * catalogue::DAY_MS)
    }
}

/// A generated world: the catalogue, the users, the events and the ground truth behind them.
///
/// Index `n` of every per-item vector describes item `i{n}` (`items[n]`), and likewise for
/// users. Genre and creator indices `k` name `genre_names[k]` and creator `c{k}`.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub config: WorldConfig,
    pub items: Vec<ItemRecord>,
    pub users: Vec<UserRecord>,
    /// Sorted by `ts`, ids `e0`, `e1`, ... in that order.
    pub events: Vec<Event>,

    pub genre_names: Vec<String>,
    /// Unit centroid of each genre in taste space.
    pub genre_vec: Vec<Vec<f32>>,
    /// Primary genre of each creator.
    pub creator_genre: Vec<usize>,

    /// Unit taste vector of each user.
    pub user_taste: Vec<Vec<f32>>,
    /// Relative activity level (Pareto, at least 1).
    pub user_activity: Vec<f64>,
    pub user_fav_genres: Vec<Vec<usize>>,
    pub user_fav_creators: Vec<Vec<usize>>,

    /// Unit latent vector of each item.
    pub item_vec: Vec<Vec<f32>>,
    /// Primary genre of each item (the first of `item_genre_sets`).
    pub item_genres: Vec<usize>,
    /// All genres of each item, primary first.
    pub item_genre_sets: Vec<Vec<usize>>,
    pub item_creator: Vec<usize>,
    /// Base popularity weight, `1 / rank` (Zipf, exponent 1).
    pub item_popularity: Vec<f64>,
    pub item_price: Vec<Option<f64>>,
    pub item_released_at: Vec<Timestamp>,
    /// When the item churned (became unavailable), if it did.
    pub item_unavailable_from: Vec<Option<Timestamp>>,
}

impl World {
    /// Generates the whole world, holding every event in memory. For very large event counts
    /// use [`World::catalogue`] and [`events_iter`].
    pub fn generate(cfg: &WorldConfig) -> World {
        let mut stream = EventStream::new(cfg);
        let events: Vec<Event> = stream.by_ref().collect();
        let mut world = stream.into_world();
        world.events = events;
        world
    }

    /// The same world without its events (`events` is empty): the catalogue, the users and the
    /// ground truth, cheap to build at any event count.
    pub fn catalogue(cfg: &WorldConfig) -> World {
        catalogue::build(cfg)
    }

    /// Everything as log records: items, then users, then events in time order.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let items = self.items.iter().cloned().map(Record::Item);
        let users = self.users.iter().cloned().map(Record::User);
        items.chain(users).chain(self.events.iter().cloned().map(Record::Event))
    }

    /// The true affinity of a user for an item: the dot product of their latent vectors.
    pub fn affinity(&self, user: usize, item: usize) -> f32 {
        catalogue::dot(&self.user_taste[user], &self.item_vec[item])
    }

    /// Whether the item can be interacted with at `ts`: released, and not churned yet.
    pub fn item_live_at(&self, item: usize, ts: Timestamp) -> bool {
        self.item_released_at[item] <= ts && self.item_unavailable_from[item].is_none_or(|c| ts < c)
    }

    /// The index of user `u{n}`, if the id has that form and exists.
    pub fn user_index(&self, id: &str) -> Option<usize> {
        parse_index(id, 'u').filter(|&n| n < self.users.len())
    }

    /// The index of item `i{n}`, if the id has that form and exists.
    pub fn item_index(&self, id: &str) -> Option<usize> {
        parse_index(id, 'i').filter(|&n| n < self.items.len())
    }
}

fn parse_index(id: &str, prefix: char) -> Option<usize> {
    let digits = id.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// Streams the events of the world `cfg` describes, in time order, without holding them all:
/// memory stays around one hour of events. Yields exactly what [`World::generate`] puts in
/// `events`.
pub fn events_iter(cfg: &WorldConfig) -> EventStream {
    EventStream::new(cfg)
}
