//! Shared test helpers.
#![allow(dead_code)]

pub(crate) mod real_agent;
pub(crate) mod recording_agent;
pub(crate) mod verifying_server;
