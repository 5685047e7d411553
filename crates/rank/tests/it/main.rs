//! Integration tests of the rankers.

mod calibration;
mod gbdt;
mod import;
mod linear;
mod shap;
