//! Shared by the test modules.

pub mod vectors;
