//! Shared test helpers.
#![allow(dead_code)]

pub mod recording_agent;
pub mod verifying_server;
