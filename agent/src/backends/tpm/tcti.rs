//! Strict parsing of the configured TCTI string. tss-esapi 7 ignores keys it does not know and
//! falls back to `localhost:2321`, so a typo (or `swtpm:path=…`, which it cannot express) would
//! silently talk to a different TPM; here every key must be known.

use std::str::FromStr;

use tss_esapi::tcti_ldr::{DeviceConfig, NetworkTPMConfig, TabrmdConfig, TctiNameConf};

/// Longest accepted TCTI string.
const MAX_TCTI_LEN: usize = 512;

/// Why a TCTI string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid TCTI {tcti:?}: {reason}")]
pub struct TctiError {
    tcti: String,
    reason: String,
}

fn refuse(tcti: &str, reason: impl Into<String>) -> TctiError {
    TctiError {
        tcti: tcti.chars().take(80).collect(),
        reason: reason.into(),
    }
}

/// Parses `device[:PATH]`, `swtpm:host=H,port=P`, `mssim:host=H,port=P` or
/// `tabrmd[:bus_name=N,bus_type=session|system]`.
pub fn parse_tcti(text: &str) -> Result<TctiNameConf, TctiError> {
    if text.len() > MAX_TCTI_LEN || text.chars().any(char::is_control) {
        return Err(refuse(text, "too long or has control characters"));
    }
    let (name, conf) = text.split_once(':').unwrap_or((text, ""));
    let invalid = |_| refuse(text, "tss-esapi rejected the configuration");
    match name {
        "device" => {
            if !conf.is_empty() && !conf.starts_with('/') {
                return Err(refuse(text, "the device path must be absolute"));
            }
            DeviceConfig::from_str(conf)
                .map(TctiNameConf::Device)
                .map_err(invalid)
        }
        "swtpm" | "mssim" => {
            check_keys(text, conf, &["host", "port"])?;
            let config = NetworkTPMConfig::from_str(conf).map_err(invalid)?;
            Ok(if name == "swtpm" {
                TctiNameConf::Swtpm(config)
            } else {
                TctiNameConf::Mssim(config)
            })
        }
        "tabrmd" => {
            check_keys(text, conf, &["bus_name", "bus_type"])?;
            TabrmdConfig::from_str(conf)
                .map(TctiNameConf::Tabrmd)
                .map_err(invalid)
        }
        _ => Err(refuse(
            text,
            "unknown TCTI (expected device, swtpm, mssim or tabrmd)",
        )),
    }
}

fn check_keys(text: &str, conf: &str, allowed: &[&str]) -> Result<(), TctiError> {
    if conf.is_empty() {
        return Ok(());
    }
    for pair in conf.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(refuse(text, format!("{pair:?} is not key=value")));
        };
        if key == "path" {
            return Err(refuse(
                text,
                "Unix-socket TPMs (path=) cannot be reached through tss-esapi 7; run swtpm with \
                 --server type=tcp and use swtpm:host=127.0.0.1,port=N",
            ));
        }
        if !allowed.contains(&key) {
            return Err(refuse(
                text,
                format!("unknown key {key:?} (allowed: {})", allowed.join(", ")),
            ));
        }
        if value.is_empty() {
            return Err(refuse(text, format!("empty value for {key}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert!(matches!(
            parse_tcti("device:/dev/tpmrm0"),
            Ok(TctiNameConf::Device(_))
        ));
        assert!(matches!(parse_tcti("device"), Ok(TctiNameConf::Device(_))));
        assert!(matches!(
            parse_tcti("swtpm:host=127.0.0.1,port=2321"),
            Ok(TctiNameConf::Swtpm(_))
        ));
        assert!(matches!(
            parse_tcti("mssim:host=localhost,port=2321"),
            Ok(TctiNameConf::Mssim(_))
        ));
        assert!(matches!(parse_tcti("tabrmd"), Ok(TctiNameConf::Tabrmd(_))));
        assert!(matches!(
            parse_tcti("tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=session"),
            Ok(TctiNameConf::Tabrmd(_))
        ));
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "swtpm:path=/run/tpm.sock",
            "swtpm:host=127.0.0.1,prot=2321",
            "swtpm:host=127.0.0.1,port=notaport",
            "swtpm:host=",
            "device:dev/tpm0",
            "libtpms",
            "cmd:swtpm socket",
            "",
        ] {
            assert!(parse_tcti(bad).is_err(), "{bad} should be refused");
        }
    }
}
