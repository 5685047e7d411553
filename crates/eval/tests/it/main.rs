//! Integration tests of the evaluation protocol.

mod shared_data;
