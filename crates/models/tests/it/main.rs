//! Integration tests of cascade-models: planted-structure recovery, agreement with exact
//! solutions and hand-computed values, and the model file format.

mod common;

mod als;
mod bpr;
mod content;
mod itemknn;
mod persist;
mod popularity;
