//! Integration tests of the rankers.
