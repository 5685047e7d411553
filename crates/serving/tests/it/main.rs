//! Train → serve without the binary: a bundle trained by `cascade-training` from a synthetic
//! world's log, served by this crate, and the parity of the two halves' feature rows.

mod train_serve;
