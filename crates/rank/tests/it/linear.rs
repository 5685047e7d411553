//! Tests of `cascade_rank::linear`.
