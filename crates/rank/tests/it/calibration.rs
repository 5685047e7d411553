//! Tests of `cascade_rank::calibration`.
