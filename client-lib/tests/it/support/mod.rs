//! Shared test helpers.
#![allow(dead_code)]

pub mod real_agent;
pub mod recording_agent;
pub mod verifying_server;
