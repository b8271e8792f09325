//! Shared by the test modules.

pub(crate) mod vectors;
