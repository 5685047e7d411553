//! The retrieval sources by kind: the names configurations, bundles and ranker features use,
//! who each serves, and the quotas training and serving both start from.

use crate::candidates::Audience;
use std::collections::BTreeMap;

/// A retrieval source a pipeline can ask for candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// Implicit ALS, served through the ANN index over its item factors.
    Als,
    ItemKnn,
    Bpr,
    /// Tf-idf over item attribute tokens.
    Content,
    /// Popularity decayed with a 7-day half-life.
    Trending,
    Pop,
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Als,
        SourceKind::ItemKnn,
        SourceKind::Bpr,
        SourceKind::Content,
        SourceKind::Trending,
        SourceKind::Pop,
    ];

    /// The name in `cascade.toml`, in a bundle's artifacts and in ranker feature names.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Als => "als",
            SourceKind::ItemKnn => "itemknn",
            SourceKind::Bpr => "bpr",
            SourceKind::Content => "content",
            SourceKind::Trending => "trending",
            SourceKind::Pop => "pop",
        }
    }

    pub fn parse(name: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The names of every source, for error messages.
    pub fn names() -> String {
        SourceKind::ALL.map(SourceKind::name).join(", ")
    }

    /// Who the source serves: the collaborative sources only users with history, whose
    /// estimates for anyone else are noise; the others everyone.
    pub fn audience(self) -> Audience {
        match self {
            SourceKind::Als | SourceKind::ItemKnn | SourceKind::Bpr => Audience::Warm,
            SourceKind::Content | SourceKind::Trending | SourceKind::Pop => Audience::All,
        }
    }

    /// Candidates the source contributes unless a pipeline says otherwise (500 in all).
    pub fn default_quota(self) -> usize {
        match self {
            SourceKind::Als => 150,
            SourceKind::ItemKnn | SourceKind::Bpr => 100,
            SourceKind::Content | SourceKind::Trending | SourceKind::Pop => 50,
        }
    }
}

/// Every source with its default quota: the pipelines' default and the rankers' training mix.
pub fn default_quotas() -> BTreeMap<String, usize> {
    SourceKind::ALL.into_iter().map(|k| (k.name().to_string(), k.default_quota())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_quotas_fill_500() {
        for kind in SourceKind::ALL {
            assert_eq!(SourceKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(SourceKind::parse("svd"), None);
        assert_eq!(default_quotas().values().sum::<usize>(), 500);
    }
}
