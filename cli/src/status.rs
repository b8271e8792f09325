//! `hwsign status`, and the backend health that `keys list` reports alongside the keys.

use std::process::ExitCode;

use hwsign_client::AgentClient;
use hwsign_proto::api::{BackendStatus, StatusResponse};

/// Exit code of `status` and `keys list` when the agent answers but a configured backend is
/// unavailable (its keys cannot sign). 1 stays "the command failed" (agent unreachable, ...).
pub(crate) const EXIT_BACKEND_UNAVAILABLE: u8 = 3;

/// `hwsign status [--json]`.
pub(crate) async fn run(agent: &AgentClient, json: bool) -> anyhow::Result<ExitCode> {
    let status = agent.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(exit_code(&status.backends))
}

fn print_status(status: &StatusResponse) {
    println!("agent version {}", status.version);
    println!("uptime        {}", human_duration(status.uptime_secs));
    println!("keys          {}", status.keys);
    for backend in &status.backends {
        let state = if backend.available {
            "available"
        } else {
            "UNAVAILABLE"
        };
        match &backend.detail {
            Some(detail) => println!("backend       {} ({state}: {detail})", backend.name),
            None => println!("backend       {} ({state})", backend.name),
        }
    }
}

/// [`EXIT_BACKEND_UNAVAILABLE`] if any backend is down, else success.
pub(crate) fn exit_code(backends: &[BackendStatus]) -> ExitCode {
    if backends.iter().all(|b| b.available) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BACKEND_UNAVAILABLE)
    }
}

/// `3 d 4 h 5 min 6 s`, leading zero units left out.
pub(crate) fn human_duration(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        (secs / 3_600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days} d"));
    }
    if days > 0 || hours > 0 {
        parts.push(format!("{hours} h"));
    }
    if days > 0 || hours > 0 || minutes > 0 {
        parts.push(format!("{minutes} min"));
    }
    parts.push(format!("{seconds} s"));
    parts.join(" ")
}

/// `2026-11-23 19:30:00 UTC` for seconds since the epoch; `unknown` for 0 (a PKCS#11 token
/// records no creation time).
pub(crate) fn human_time(unix: i64) -> String {
    if unix == 0 {
        return "unknown".to_owned();
    }
    let compact = hwsign_proto::SigningTime::from_unix(unix).to_amz_date();
    // YYYYMMDDTHHMMSSZ
    match (
        compact.get(0..4),
        compact.get(4..6),
        compact.get(6..8),
        compact.get(9..11),
        compact.get(11..13),
        compact.get(13..15),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) => {
            format!("{y}-{mo}-{d} {h}:{mi}:{s} UTC")
        }
        _ => compact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newuser_durations_and_dates_are_human() {
        assert_eq!(human_duration(5), "5 s");
        assert_eq!(human_duration(3_725), "1 h 2 min 5 s");
        assert_eq!(human_duration(90_000), "1 d 1 h 0 min 0 s");
        assert_eq!(human_time(0), "unknown");
        assert_eq!(human_time(1_795_462_200), "2026-11-23 19:30:00 UTC");
    }
}
