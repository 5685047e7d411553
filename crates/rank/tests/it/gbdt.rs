//! Tests of `cascade_rank::gbdt`.
