//! End-to-end tests of Tandem live in this crate's test targets.
