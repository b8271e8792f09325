//! Configuration files: the shipped sample, the defaults, and every invalid fixture in
//! `tests/fixtures/config/` (each names the error it must produce in its first line).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use hwsign_agent::Config;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads `path` and checks that it fails with the message its `# expect:` line names.
fn check_fixture(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let expected = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .with_context(|| format!("{} has no # expect: line", path.display()))?;
    match Config::load(path) {
        Ok(config) => bail!("{} was accepted: {config:?}", path.display()),
        Err(e) => {
            let message = e.to_string();
            ensure!(
                message.contains(expected),
                "{}: expected {expected:?} in {message:?}",
                path.display()
            );
        }
    }
    Ok(())
}

fn fixtures(dir: &str) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join(dir))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    paths.sort();
    Ok(paths)
}

#[test]
fn invalid_fixtures_are_refused_with_their_reason() -> Result<()> {
    let paths = fixtures("tests/fixtures/config")?;
    ensure!(paths.len() >= 20, "fixtures missing: {paths:?}");
    for path in paths {
        let software_section = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("software_"));
        if software_section && !cfg!(feature = "software") {
            // Without the backend the section itself is the error.
            let message = Config::load(&path).err().map(|e| e.to_string());
            ensure!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("not compiled")),
                "{}: {message:?}",
                path.display()
            );
            continue;
        }
        check_fixture(&path)?;
    }
    Ok(())
}

#[test]
fn sections_of_backends_not_compiled_in_are_named() -> Result<()> {
    let mut checked = 0;
    for path in fixtures("tests/fixtures/config-not-compiled")? {
        let backend = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let compiled = match backend {
            "tpm" => cfg!(feature = "tpm"),
            "pkcs11" => cfg!(feature = "pkcs11"),
            other => bail!("unexpected fixture {other}"),
        };
        if compiled {
            // With the backend built in, the same section is accepted as far as parsing goes.
            if let Err(e) = Config::load(&path) {
                ensure!(
                    !e.to_string().contains("not compiled"),
                    "{}: {e}",
                    path.display()
                );
            }
        } else {
            check_fixture(&path)?;
            checked += 1;
        }
    }
    if !cfg!(feature = "tpm") || !cfg!(feature = "pkcs11") {
        ensure!(checked > 0);
    }
    Ok(())
}

#[test]
#[cfg(feature = "software")]
fn the_sample_configuration_is_valid_and_says_what_it_shows() -> Result<()> {
    let config = Config::load(&manifest_dir().join("config.sample.toml"))?;
    ensure!(config.socket_path == Path::new("/run/user/1000/hwsign/agent.sock"));
    ensure!(config.state_dir == Path::new("/home/alice/.local/state/hwsign"));
    ensure!(config.allowed_uids == [1000]);
    ensure!(config.max_connections == 64);
    // One allowed uid: it may use every slot.
    ensure!(config.max_connections_per_uid.is_none() && config.connections_per_uid() == 64);
    ensure!(config.limits == hwsign_agent::config::Limits::default());
    ensure!(config.backends.software_enabled());
    ensure!(config.key_rules.len() == 1);
    let rule = &config.key_rules[0];
    ensure!(rule.check("payments", "api.example.com", 1000).is_ok());
    ensure!(
        rule.check("payments", "db.internal.example.com", 1000)
            .is_ok()
    );
    ensure!(rule.check("payments", "example.com", 1000).is_err());
    Ok(())
}

#[test]
fn the_per_uid_connection_share_defaults_to_half_with_several_uids() -> Result<()> {
    let base = "state_dir = \"/s\"\nsocket_path = \"/s/a.sock\"\nmax_connections = 9\n";
    let config = Config::parse(&format!("{base}allowed_uids = [1000, 1001]\n"))?;
    ensure!(config.connections_per_uid() == 4);
    let config = Config::parse(&format!("{base}allowed_uids = [1000, 1000]\n"))?;
    ensure!(config.connections_per_uid() == 9);
    let config = Config::parse(&format!(
        "{base}allowed_uids = [1000, 1001]\nmax_connections_per_uid = 1\n"
    ))?;
    ensure!(config.connections_per_uid() == 1);
    let one = Config::parse(
        "state_dir = \"/s\"\nsocket_path = \"/s/a.sock\"\nmax_connections = 1\nallowed_uids = [1, 2]\n",
    )?;
    ensure!(one.connections_per_uid() == 1);
    Ok(())
}

#[test]
#[cfg(feature = "software")]
fn an_empty_configuration_takes_the_defaults() -> Result<()> {
    let config = Config::parse("")?;
    ensure!(config.allowed_uids == [hwsign_agent::config::own_uid()]);
    ensure!(config.backends.software_enabled());
    ensure!(config.audit_log == config.state_dir.join("audit.jsonl"));
    ensure!(config.socket_path.ends_with("agent.sock"));
    let disabled = Config::parse(
        "state_dir = \"/s\"\nsocket_path = \"/s/a.sock\"\n[backends.software]\nenabled = false\n",
    )?;
    ensure!(!disabled.backends.software_enabled());
    let demo = Config::for_state_dir("/tmp/d/state", "/tmp/d/agent.sock");
    demo.validate()?;
    ensure!(demo.backends.software_enabled());
    Ok(())
}

#[test]
fn the_binary_checks_configurations() -> Result<()> {
    let bin = env!("CARGO_BIN_EXE_hwsign-agent");
    let bad = manifest_dir().join("tests/fixtures/config/zero_connections.toml");
    let output = Command::new(bin)
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()?;
    ensure!(!output.status.success());
    ensure!(String::from_utf8_lossy(&output.stderr).contains("max_connections"));
    if cfg!(feature = "software") {
        let output = Command::new(bin)
            .arg("--config")
            .arg(manifest_dir().join("config.sample.toml"))
            .arg("--check-config")
            .output()?;
        ensure!(output.status.success(), "{output:?}");
    }
    Ok(())
}

#[test]
fn socket_group_takes_a_name_or_a_gid() -> Result<()> {
    let base = "state_dir = \"/s\"\nsocket_path = \"/s/a.sock\"\n";
    ensure!(Config::parse(base)?.socket_group.is_none());
    ensure!(Config::parse(&format!("{base}socket_group = \"root\"\n"))?.socket_group == Some(0));
    ensure!(Config::parse(&format!("{base}socket_group = 990\n"))?.socket_group == Some(990));
    ensure!(Config::parse(&format!("{base}socket_group = -1\n")).is_err());
    Ok(())
}
