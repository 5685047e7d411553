//! Tests of `cascade_rank::import`.
