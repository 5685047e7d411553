//! The light ranker: a linear model over cheap features.
