//! Gradient-boosted trees: histogram-based training for LambdaMART and binary log-loss.
