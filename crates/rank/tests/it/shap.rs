//! Tests of `cascade_rank::shap`.
