//! Time-ordered event generation, one hour of the window at a time.

use crate::alias::Alias;
use crate::catalogue::{self, DAY_MS};
use crate::{World, WorldConfig};
use cascade_core::{Event, Timestamp, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Geometric, LogNormal, Normal};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::iter::FusedIterator;

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
/// Mixed into the seed so the event generator's stream differs from the catalogue's.
const EVENT_SEED_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

/// Relative traffic by hour of day (UTC): quiet before dawn, peaking in the evening.
const HOURLY: [f64; 24] = [
    0.55, 0.35, 0.22, 0.15, 0.12, 0.15, 0.30, 0.55, 0.75, 0.85, 0.90, 0.95, //
    1.05, 1.00, 0.95, 0.95, 1.05, 1.25, 1.60, 2.00, 2.30, 2.20, 1.70, 1.05,
];
const WEEKEND_BOOST: f64 = 1.25;
/// Traffic at the end of the window relative to its start, minus one.
const TREND: f64 = 0.2;

/// Softmax temperature over affinity in item choice.
const TEMPERATURE: f32 = 0.15;
const ENGAGEMENT_MID: f32 = 0.55;
const ENGAGEMENT_SCALE: f32 = 0.15;
const FRESH_BOOST: f64 = 3.0;
const FRESH_DAYS: f64 = 4.0;
/// Candidate pool per event: from popularity, from a favourite genre, from a favourite creator.
const POP_CANDIDATES: usize = 8;
const GENRE_CANDIDATES: usize = 4;
const CREATOR_CANDIDATES: usize = 2;
const CANDIDATES: usize = POP_CANDIDATES + GENRE_CANDIDATES + CREATOR_CANDIDATES;
/// A user who had a session less than this long ago is passed over when possible.
const SESSION_COOLDOWN_MS: i64 = 20 * MINUTE_MS;

const SURFACES: [(&str, f64); 5] =
    [("home", 0.45), ("search", 0.2), ("related", 0.2), ("trending", 0.1), ("notification", 0.05)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    View,
    Click,
    Play,
    Skip,
    Like,
    Purchase,
    Rating,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Click => "click",
            Kind::Play => "play",
            Kind::Skip => "skip",
            Kind::Like => "like",
            Kind::Purchase => "purchase",
            Kind::Rating => "rating",
        }
    }
}

/// An event waiting for every earlier one to be generated, by its slot in
/// [`EventStream::slots`]. Ordered for a min-heap on `(ts, seq)`: `seq` is the generation
/// order, which breaks ties deterministically.
#[derive(Debug)]
struct Pending {
    ts: i64,
    seq: u64,
    slot: u32,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.ts, other.seq).cmp(&(self.ts, self.seq))
    }
}

/// Sampling tables derived from the world.
#[derive(Debug)]
struct Tables {
    popularity: Alias,
    genre_items: Vec<Vec<u32>>,
    genre_alias: Vec<Alias>,
    creator_items: Vec<Vec<u32>>,
    users: Alias,
    /// The most popular item, live throughout the window.
    anchor: usize,
    /// Latent vectors laid out contiguously, `dim` floats each.
    dim: usize,
    user_taste: Vec<f32>,
    item_vec: Vec<f32>,
    surfaces: Alias,
}

impl Tables {
    fn new(world: &World) -> Tables {
        let mut genre_items = vec![Vec::new(); world.genre_names.len()];
        let mut creator_items = vec![Vec::new(); world.creator_genre.len()];
        for (i, genres) in world.item_genre_sets.iter().enumerate() {
            for &g in genres {
                genre_items[g].push(i as u32);
            }
            creator_items[world.item_creator[i]].push(i as u32);
        }
        let genre_alias = genre_items
            .iter()
            .map(|list| Alias::new(&list.iter().map(|&i| world.item_popularity[i as usize]).collect::<Vec<_>>()))
            .collect();
        let anchor = (0..world.items.len())
            .max_by(|&a, &b| world.item_popularity[a].total_cmp(&world.item_popularity[b]))
            .unwrap_or(0);
        Tables {
            popularity: Alias::new(&world.item_popularity),
            genre_items,
            genre_alias,
            creator_items,
            users: Alias::new(&world.user_activity),
            anchor,
            dim: world.config.latent_dim.max(1),
            user_taste: world.user_taste.concat(),
            item_vec: world.item_vec.concat(),
            surfaces: Alias::new(&SURFACES.map(|(_, w)| w)),
        }
    }

    fn affinity(&self, user: usize, item: usize) -> f32 {
        let d = self.dim;
        catalogue::dot(&self.user_taste[user * d..(user + 1) * d], &self.item_vec[item * d..(item + 1) * d])
    }

    fn engagement(&self, user: usize, item: usize) -> f64 {
        let a = self.affinity(user, item);
        f64::from(1.0 / (1.0 + (-(a - ENGAGEMENT_MID) / ENGAGEMENT_SCALE).exp()))
    }
}

#[derive(Debug)]
struct Dists {
    /// Extra time between two events of a session, beyond a 5 s minimum.
    gap_ms: Exp<f64>,
    /// Session length minus one.
    session_extra: Geometric,
    view_ms: LogNormal<f64>,
    skip_ms: Exp<f64>,
    position: Geometric,
    stars_noise: Normal<f64>,
}

impl Dists {
    fn new() -> Dists {
        Dists {
            gap_ms: Exp::new(1.0 / 90_000.0).expect("valid rate"),
            session_extra: Geometric::new(0.25).expect("valid probability"),
            view_ms: LogNormal::new(6_000f64.ln(), 0.8).expect("valid log-normal"),
            skip_ms: Exp::new(1.0 / 12_000.0).expect("valid rate"),
            position: Geometric::new(0.25).expect("valid probability"),
            stars_noise: Normal::new(0.0, 0.6).expect("valid normal"),
        }
    }
}

/// The events of a world in time order, generated lazily (see [`crate::events_iter`]).
#[derive(Debug)]
pub struct EventStream {
    world: World,
    tables: Tables,
    dists: Dists,
    rng: StdRng,
    start: i64,
    end: i64,
    /// Cumulative number of events due by the end of each hour of the window.
    targets: Vec<u64>,
    next_hour: usize,
    /// Every event before this instant has been generated.
    frontier: i64,
    generated: u64,
    emitted: u64,
    total: u64,
    heap: BinaryHeap<Pending>,
    /// Pending events, held out of the heap so that heap operations move small keys.
    slots: Vec<Option<Event>>,
    free_slots: Vec<u32>,
    seq: u64,
    user_free_at: Vec<i64>,
    max_pending: usize,
}

impl EventStream {
    pub(crate) fn new(cfg: &WorldConfig) -> EventStream {
        let world = catalogue::build(cfg);
        let tables = Tables::new(&world);
        let start = cfg.start.millis();
        let end = cfg.end().millis();
        let hours = if world.users.is_empty() || world.items.is_empty() || cfg.events == 0 {
            0
        } else {
            cfg.days as usize * 24
        };
        let total = if hours == 0 { 0 } else { cfg.events as u64 };
        let weights: Vec<f64> = (0..hours)
            .map(|h| {
                let mid = start + h as i64 * HOUR_MS + HOUR_MS / 2;
                let hour_of_day = mid.div_euclid(HOUR_MS).rem_euclid(24) as usize;
                // 1970-01-01 was a Thursday; Monday is 0.
                let weekday = (mid.div_euclid(DAY_MS) + 3).rem_euclid(7);
                let weekend = if weekday >= 5 { WEEKEND_BOOST } else { 1.0 };
                HOURLY[hour_of_day] * weekend * (1.0 + TREND * h as f64 / hours as f64)
            })
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let targets = weights
            .iter()
            .enumerate()
            .map(|(h, w)| {
                acc += w;
                if h + 1 == hours { total } else { ((total as f64 * acc / sum).round() as u64).min(total) }
            })
            .collect();
        EventStream {
            user_free_at: vec![i64::MIN; world.users.len()],
            world,
            tables,
            dists: Dists::new(),
            rng: StdRng::seed_from_u64(cfg.seed ^ EVENT_SEED_SALT),
            start,
            end,
            targets,
            next_hour: 0,
            frontier: start,
            generated: 0,
            emitted: 0,
            total,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            seq: 0,
            max_pending: 0,
        }
    }

    /// The world the events come from, with an empty `events`: catalogue, users, ground truth.
    pub fn world(&self) -> &World {
        &self.world
    }

    pub(crate) fn into_world(self) -> World {
        self.world
    }

    /// The most events held back at once so far.
    #[cfg(test)]
    pub(crate) fn max_pending(&self) -> usize {
        self.max_pending
    }

    fn fill_hour(&mut self) {
        let h = self.next_hour;
        self.next_hour += 1;
        let h_start = self.start + h as i64 * HOUR_MS;
        let h_end = (h_start + HOUR_MS).min(self.end);
        let mut count = self.targets[h] - self.generated;
        self.generated = self.targets[h];
        let mut sessions = Vec::new();
        while count > 0 {
            let len = (1 + self.dists.session_extra.sample(&mut self.rng)).min(count);
            count -= len;
            sessions.push((self.rng.random_range(h_start..h_end), len));
        }
        sessions.sort_unstable();
        for (session_start, len) in sessions {
            self.session(session_start, len);
        }
        self.frontier = h_end;
        self.max_pending = self.max_pending.max(self.heap.len());
    }

    fn pick_user(&mut self, at: i64) -> usize {
        let mut u = 0;
        for _ in 0..8 {
            u = self.tables.users.sample(&mut self.rng);
            if self.user_free_at[u] <= at {
                break;
            }
        }
        u
    }

    fn session(&mut self, session_start: i64, len: u64) {
        let user = self.pick_user(session_start);
        let mut ts = session_start;
        let mut prev = None;
        for k in 0..len {
            if k > 0 {
                let gap = 5_000 + self.dists.gap_ms.sample(&mut self.rng) as i64;
                ts = (ts + gap).min(self.end - 1);
            }
            let (event, item, kind) = self.interaction(user, ts, prev);
            let slot = match self.free_slots.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Some(event);
                    slot
                }
                None => {
                    self.slots.push(Some(event));
                    u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 pending events")
                }
            };
            self.heap.push(Pending { ts, seq: self.seq, slot });
            self.seq += 1;
            prev = Some((item, kind));
        }
        self.user_free_at[user] = ts + SESSION_COOLDOWN_MS;
    }

    /// The next step of a funnel on the previous event's item, if the user takes it, with the
    /// user's engagement with the item.
    fn follow_up(&mut self, user: usize, ts: i64, prev: Option<(usize, Kind)>) -> Option<(usize, Kind, f64)> {
        let (item, kind) = prev?;
        if !self.world.item_live_at(item, Timestamp(ts)) {
            return None;
        }
        let e = self.tables.engagement(user, item);
        let r: f64 = self.rng.random();
        let next = match kind {
            Kind::View if r < 0.4 * e => Kind::Click,
            Kind::Click if r < 0.6 * e => {
                if self.world.item_price[item].is_some() && self.rng.random_bool(0.3) {
                    Kind::Purchase
                } else {
                    Kind::Play
                }
            }
            Kind::Play if r < 0.3 * e => Kind::Like,
            _ => return None,
        };
        Some((item, next, e))
    }

    fn interaction(&mut self, user: usize, ts: i64, prev: Option<(usize, Kind)>) -> (Event, usize, Kind) {
        let (item, kind, e) = match self.follow_up(user, ts, prev) {
            Some(step) => step,
            None => {
                let item = self.choose_item(user, ts);
                let e = self.tables.engagement(user, item);
                (item, self.choose_kind(item, e), e)
            }
        };
        let fields = self.fields(kind, item, e);
        let event = Event {
            id: None,
            event_type: kind.name().to_string(),
            ts: Timestamp(ts),
            user: Some(numbered_id('u', user as u64)),
            item: Some(numbered_id('i', item as u64)),
            fields,
        };
        (event, item, kind)
    }

    /// Draws a candidate pool and picks from it by affinity softmax and freshness.
    fn choose_item(&mut self, user: usize, ts: i64) -> usize {
        let world = &self.world;
        let tables = &self.tables;
        let rng = &mut self.rng;
        let mut pool = [(0usize, 0f64); CANDIDATES];
        for _round in 0..4 {
            let mut n = 0;
            let mut total = 0.0;
            for slot in 0..CANDIDATES {
                let item = if slot < POP_CANDIDATES {
                    None
                } else if slot < POP_CANDIDATES + GENRE_CANDIDATES {
                    let favs = &world.user_fav_genres[user];
                    (!favs.is_empty())
                        .then(|| favs[rng.random_range(0..favs.len())])
                        .filter(|&g| !tables.genre_items[g].is_empty())
                        .map(|g| tables.genre_items[g][tables.genre_alias[g].sample(rng)] as usize)
                } else {
                    let favs = &world.user_fav_creators[user];
                    (!favs.is_empty())
                        .then(|| &tables.creator_items[favs[rng.random_range(0..favs.len())]])
                        .filter(|list| !list.is_empty())
                        .map(|list| list[rng.random_range(0..list.len())] as usize)
                };
                let item = item.unwrap_or_else(|| tables.popularity.sample(rng));
                if !world.item_live_at(item, Timestamp(ts)) {
                    continue;
                }
                let age_days = (ts - world.item_released_at[item].millis()) as f64 / DAY_MS as f64;
                let fresh =
                    if age_days < 10.0 * FRESH_DAYS { 1.0 + FRESH_BOOST * (-age_days / FRESH_DAYS).exp() } else { 1.0 };
                let w = f64::from((tables.affinity(user, item) / TEMPERATURE).exp()) * fresh;
                pool[n] = (item, w);
                n += 1;
                total += w;
            }
            if n > 0 {
                let mut x = rng.random::<f64>() * total;
                for &(item, w) in &pool[..n] {
                    if x < w {
                        return item;
                    }
                    x -= w;
                }
                return pool[n - 1].0;
            }
        }
        tables.anchor
    }

    fn choose_kind(&mut self, item: usize, e: f64) -> Kind {
        let priced = self.world.item_price[item].is_some();
        let options = [
            (Kind::View, 0.50),
            (Kind::Click, 0.10 * (0.4 + e)),
            (Kind::Play, 0.12 * (0.4 + e)),
            (Kind::Skip, 0.14 * (1.0 - e)),
            (Kind::Like, 0.07 * e),
            (Kind::Purchase, if priced { 0.04 * e } else { 0.0 }),
            (Kind::Rating, 0.05),
        ];
        let total: f64 = options.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.random::<f64>() * total;
        for (kind, w) in options {
            if x < w {
                return kind;
            }
            x -= w;
        }
        Kind::View
    }

    fn fields(&mut self, kind: Kind, item: usize, e: f64) -> Vec<(String, Value)> {
        let rng = &mut self.rng;
        let d = &self.dists;
        let field = |name: &str, v: Value| (name.to_string(), v);
        let position = |rng: &mut StdRng| Value::Int(d.position.sample(rng).min(49) as i64);
        let surface = |rng: &mut StdRng| Value::String(SURFACES[self.tables.surfaces.sample(rng)].0.to_string());
        match kind {
            Kind::View => {
                let duration = (d.view_ms.sample(rng) * (0.5 + e)).max(200.0) as i64;
                vec![
                    field("duration_ms", Value::Int(duration)),
                    field("position", position(rng)),
                    field("surface", surface(rng)),
                ]
            }
            Kind::Click => vec![field("position", position(rng)), field("surface", surface(rng))],
            Kind::Play => {
                let length = play_length_ms(item);
                let completed = rng.random_bool(0.15 + 0.75 * e);
                let duration = if completed { length } else { (length as f64 * rng.random_range(0.05..0.95)) as i64 };
                vec![field("completed", Value::Bool(completed)), field("duration_ms", Value::Int(duration))]
            }
            Kind::Skip => vec![field("after_ms", Value::Int(500 + d.skip_ms.sample(rng) as i64))],
            Kind::Like => Vec::new(),
            Kind::Purchase => {
                let quantity = match rng.random_range(0..20) {
                    0 => 3,
                    1 | 2 => 2,
                    _ => 1,
                };
                let mut fields = Vec::with_capacity(2);
                if let Some(price) = self.world.item_price[item] {
                    fields.push(field("price", Value::Float(price)));
                }
                fields.push(field("quantity", Value::Int(quantity)));
                fields
            }
            Kind::Rating => {
                let stars = (1.0 + 4.0 * e + d.stars_noise.sample(rng)).round().clamp(1.0, 5.0);
                vec![field("value", Value::Float(stars))]
            }
        }
    }
}

/// `prefix` followed by the decimal digits of `n` (`format!` is a hot spot at 10M events).
fn numbered_id(prefix: char, mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(1 + digits.len() - at);
    id.push(prefix);
    id.extend(digits[at..].iter().map(|&d| char::from(d)));
    id
}

/// Length of an item's playable content, fixed per item: 1.5 to 6 minutes.
fn play_length_ms(item: usize) -> i64 {
    90_000 + ((item as u64).wrapping_mul(2_654_435_761) % 270_000) as i64
}

impl Iterator for EventStream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let hours_done = self.next_hour >= self.targets.len();
            if let Some(top) = self.heap.peek()
                && (hours_done || top.ts < self.frontier)
            {
                let slot = self.heap.pop()?.slot;
                self.free_slots.push(slot);
                let mut event = self.slots[slot as usize].take()?;
                event.id = Some(numbered_id('e', self.emitted));
                self.emitted += 1;
                return Some(event);
            }
            if hours_done {
                return None;
            }
            self.fill_hour();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.total - self.emitted) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EventStream {}

impl FusedIterator for EventStream {}
