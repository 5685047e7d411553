//! The compiled feature definitions an engine runs, and selections of features by name.

use crate::error::{FeatureError, Result};
use crate::resolve::{AggSpec, ResolvedFeature, ResolvedView};
use cascade_core::features::ViewSource;
use cascade_core::{Config, FieldType};

/// The validated feature views of a project, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    views: Vec<ResolvedView>,
    fingerprint: u32,
}

impl FeatureSet {
    /// Validates and resolves the `[features.*]` tables of `config` (see
    /// [`resolve`](crate::resolve())); the error ([`FeatureError::Definition`]) names the feature
    /// and the reason.
    pub fn from_config(config: &Config) -> Result<FeatureSet> {
        Ok(FeatureSet::from_views(crate::resolve(config)?))
    }

    pub fn from_views(views: Vec<ResolvedView>) -> FeatureSet {
        // Everything that decides what state means: keys, sources, windows, TTLs, versions.
        let fingerprint = crc32c::crc32c(format!("{views:?}").as_bytes());
        FeatureSet { views, fingerprint }
    }

    pub fn views(&self) -> &[ResolvedView] {
        &self.views
    }

    /// A checksum of the definitions: state built under other definitions is not reused.
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// The index and definition of a view.
    pub fn view(&self, name: &str) -> Result<(usize, &ResolvedView)> {
        self.views
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == name)
            .ok_or_else(|| FeatureError::UnknownView(name.to_string()))
    }

    /// Features by reference: `"view:feature"`, or `"view"` for all of a view's features.
    pub fn select<S: AsRef<str>>(&self, refs: &[S]) -> Result<Selection> {
        let mut columns = Vec::new();
        for r in refs {
            let r = r.as_ref();
            let (view, feature) = match r.split_once(':') {
                Some((v, f)) => (v, Some(f)),
                None => (r, None),
            };
            let (vi, def) = self.view(view)?;
            match feature {
                None => columns.extend((0..def.features.len()).map(|fi| (vi, fi))),
                Some(f) => {
                    let fi = def.features.iter().position(|x| x.name == f).ok_or_else(|| {
                        FeatureError::UnknownFeature { view: view.to_string(), feature: f.to_string() }
                    })?;
                    columns.push((vi, fi));
                }
            }
        }
        Ok(Selection { columns })
    }

    /// Every feature of every view.
    pub fn all(&self) -> Selection {
        Selection {
            columns: self
                .views
                .iter()
                .enumerate()
                .flat_map(|(vi, v)| (0..v.features.len()).map(move |fi| (vi, fi)))
                .collect(),
        }
    }

    /// The column descriptions of a selection.
    pub fn columns(&self, selection: &Selection) -> Vec<Column> {
        selection
            .columns
            .iter()
            .map(|&(vi, fi)| {
                let (v, f) = (&self.views[vi], &self.views[vi].features[fi]);
                Column { view: v.name.clone(), feature: f.name.clone(), version: v.version, ty: f.ty }
            })
            .collect()
    }

    /// An upper bound of the bytes one key of `view` holds in the online state, for keys of
    /// `key_bytes` bytes and distinct / last-N / last values of `value_bytes` bytes: every
    /// sliding window full of tiles, every `last_n` and `distinct_count` at its cap, collections
    /// at their largest capacity. Typical keys hold far less; [`crate::Engine::approx_heap_bytes`]
    /// measures what is actually held. Multiply by a million for "memory per million entities".
    pub fn max_bytes_per_entity(&self, view: &str, key_bytes: usize, value_bytes: usize) -> Result<usize> {
        let (_, v) = self.view(view)?;
        if v.source == ViewSource::Request {
            return Ok(0);
        }
        // A hash table slot (key, state, control byte) at the lowest load factor, the key's bytes,
        // and one session (a key holds at most a few sessions only for as long as a late record
        // could still bridge them).
        let slot = (size_of::<(crate::EntityKey, crate::state::EntityState)>() + 1) * 2;
        let per_feature: usize = v.features.iter().map(|f| feature_bound(f, value_bytes)).sum();
        Ok(slot + key_bytes + v.features.len() * size_of::<crate::state::FeatState>() + per_feature)
    }
}

/// Capacity a growing `Vec`/`VecDeque` may reach holding `n` elements.
fn grown(n: usize) -> usize {
    n.next_power_of_two().max(4)
}

fn feature_bound(f: &ResolvedFeature, value_bytes: usize) -> usize {
    use crate::state::Tile;
    let tiles = f.window.map_or(0, |w| w.tiles as usize);
    match f.agg {
        AggSpec::Count | AggSpec::Sum | AggSpec::Mean | AggSpec::Min | AggSpec::Max if tiles > 0 => {
            grown(tiles) * size_of::<Tile>()
        }
        AggSpec::DistinctCount { max_distinct } => {
            // hashbrown: a power-of-two bucket count at most 7/8 full, one control byte per bucket.
            let buckets = ((max_distinct + 1) * 8 / 7 + 1).next_power_of_two();
            buckets * (size_of::<(Box<str>, i64)>() + 1) + max_distinct * value_bytes
        }
        AggSpec::LastN { n } => grown(n) * size_of::<(i64, u64, Box<str>)>() + n * value_bytes,
        AggSpec::Last => size_of::<(i64, u64, Option<cascade_core::Value>)>() + value_bytes,
        _ => 0,
    }
}

/// Features chosen for a read or a training set, as (view, feature) indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub(crate) columns: Vec<(usize, usize)>,
}

impl Selection {
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The (view index, feature index) of each column.
    pub fn columns(&self) -> &[(usize, usize)] {
        &self.columns
    }
}

/// One column of a training set: `view:feature`, the view's version and the value type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub view: String,
    pub feature: String,
    pub version: u32,
    pub ty: FieldType,
}

impl Column {
    /// `view:feature`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.view, self.feature)
    }
}
