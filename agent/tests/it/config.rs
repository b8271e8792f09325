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
            let message = hwsign_agent::error_chain(&e);
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

/// The sample shows defaults, not one person's live values: as shipped (every setting commented
/// out) it is the empty configuration, and uncommenting the settings it gives as defaults changes
/// nothing.
#[test]
#[cfg(feature = "software")]
fn newuser_the_sample_configuration_shows_the_defaults() -> Result<()> {
    let text = std::fs::read_to_string(manifest_dir().join("config.sample.toml"))?;
    let dir = tempfile::tempdir()?;
    let sample = Config::load(&private_config(dir.path(), &text)?)?;
    let defaults = Config::parse("")?;
    ensure!(sample.socket_path == defaults.socket_path);
    ensure!(sample.state_dir == defaults.state_dir);
    ensure!(sample.allowed_uids == defaults.allowed_uids);
    ensure!(sample.key_rules.is_empty());

    // The settings before the examples of other backends and of key rules.
    let general = text
        .split_once("# [backends.tpm]")
        .map_or(text.as_str(), |(before, _)| before);
    let defaults_shown: Vec<&str> = general
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            *l == "[limits]"
                || *l == "[backends.software]"
                || l.split_once(" = ").is_some_and(|(name, value)| {
                    name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && !value.contains('"')
                        && !value.contains('[')
                        && !l.contains("Example")
                })
        })
        .collect();
    ensure!(defaults_shown.len() >= 10, "{defaults_shown:?}");
    let uncommented = Config::parse(&defaults_shown.join("\n"))?;
    ensure!(uncommented.max_connections == hwsign_agent::config::DEFAULT_MAX_CONNECTIONS);
    ensure!(uncommented.max_connections_per_uid.is_none());
    ensure!(uncommented.limits == hwsign_agent::config::Limits::default());
    ensure!(uncommented.backends.software_enabled());
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

/// Every cause is printed once: the messages leave their cause to `source()`, and the binary
/// prints the chain.
#[test]
fn newuser_binary_prints_each_cause_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-dir/agent.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(&missing)
        .arg("--check-config")
        .output()?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.matches("No such file or directory").count() == 1,
        "{stderr}"
    );
    ensure!(stderr.contains("cannot read configuration"), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_connections = \"many\"\n")?;
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.matches("invalid type").count() == 1, "{stderr}");
    ensure!(
        stderr.matches("invalid configuration").count() == 1,
        "{stderr}"
    );
    Ok(())
}

/// Writes `text` as a 0600 `agent.toml` in `dir` (a 0700 temporary directory).
fn private_config(dir: &Path, text: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("agent.toml");
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn check_config(path: &Path) -> Result<(bool, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .env("NO_COLOR", "1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

#[test]
fn newuser_check_config_names_the_file_it_read() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let path = private_config(
        dir.path(),
        &format!(
            "state_dir = {:?}\nsocket_path = {:?}\n",
            state.display().to_string(),
            dir.path().join("run/agent.sock").display().to_string()
        ),
    )?;
    let (ok, text) = check_config(&path)?;
    ensure!(ok, "{text}");
    ensure!(
        text.contains(&format!("configuration file: {}", path.display())),
        "{text}"
    );
    ensure!(text.contains("configuration OK"), "{text}");
    // Checking creates nothing.
    ensure!(
        !state.exists(),
        "--check-config created the state directory"
    );
    Ok(())
}

#[test]
fn newuser_check_config_refuses_directories_start_up_refuses() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755))?;
    let path = private_config(
        dir.path(),
        &format!(
            "state_dir = {:?}\nsocket_path = {:?}\n",
            state.display().to_string(),
            dir.path().join("run/agent.sock").display().to_string()
        ),
    )?;
    let (ok, text) = check_config(&path)?;
    ensure!(!ok, "accepted a state_dir start-up refuses:\n{text}");
    ensure!(
        text.contains("error: state_dir: ") && text.contains("accessible to other users"),
        "{text}"
    );
    ensure!(!text.contains("configuration OK"), "{text}");
    Ok(())
}

#[cfg(feature = "pkcs11")]
#[test]
fn newuser_check_config_warns_about_a_missing_module_and_pin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = private_config(
        dir.path(),
        &format!(
            "state_dir = {:?}\nsocket_path = {:?}\n[backends.pkcs11]\n\
             module_path = \"/nonexistent/libvendor-pkcs11.so\"\ntoken_label = \"t\"\n\
             pin_file = {:?}\n",
            dir.path().join("state").display().to_string(),
            dir.path().join("run/agent.sock").display().to_string(),
            dir.path().join("token.pin").display().to_string()
        ),
    )?;
    let (ok, text) = check_config(&path)?;
    // Start-up keeps running with the backend unavailable: warnings, not errors.
    ensure!(ok, "{text}");
    ensure!(
        text.contains("warning: [backends.pkcs11] would start unavailable")
            && text.contains("libvendor-pkcs11.so")
            && text.contains("token.pin"),
        "{text}"
    );
    Ok(())
}

#[cfg(feature = "tpm")]
#[test]
fn newuser_check_config_checks_the_tcti() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = format!(
        "state_dir = {:?}\nsocket_path = {:?}\n[backends.tpm]\n",
        dir.path().join("state").display().to_string(),
        dir.path().join("run/agent.sock").display().to_string(),
    );
    let path = private_config(dir.path(), &format!("{base}tcti = \"carrier-pigeon\"\n"))?;
    let (ok, text) = check_config(&path)?;
    ensure!(
        !ok && text.contains("error: [backends.tpm] tcti: "),
        "{text}"
    );
    let path = private_config(
        dir.path(),
        &format!("{base}tcti = \"device:/nonexistent/tpmrm9\"\n"),
    )?;
    let (ok, text) = check_config(&path)?;
    ensure!(
        !ok && text.contains("cannot open /nonexistent/tpmrm9"),
        "{text}"
    );
    Ok(())
}

/// The fenced blocks of `lang` in `doc` (relative to the repository root), after `marker`.
fn doc_blocks(doc: &str, lang: &str, marker: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest_dir().join("..").join(doc))?;
    let text = text.split_once(marker).map_or("", |(_, after)| after);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    Ok(blocks)
}

/// BACKENDS.md's SoftHSM2 recipe, run as written in an empty home directory, then its
/// configuration through `--check-config`: no error, no warning.
#[cfg(feature = "pkcs11")]
#[test]
fn newuser_softhsm2_recipe_works_in_a_fresh_home() -> Result<()> {
    let marker = "### SoftHSM2 (development and CI)";
    let script = doc_blocks("docs/BACKENDS.md", "sh", marker)?
        .into_iter()
        .next()
        .context("no sh block")?;
    let config = doc_blocks("docs/BACKENDS.md", "toml", marker)?
        .into_iter()
        .next()
        .context("no toml block")?;
    let home = tempfile::tempdir()?;
    let output = Command::new("bash")
        .args(["-euc", &script])
        .env("HOME", home.path())
        .env_remove("SOFTHSM2_CONF")
        .output()?;
    ensure!(
        output.status.success(),
        "recipe failed in a fresh home:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pin = home.path().join(".config/hwsign/token.pin");
    ensure!(std::fs::read_to_string(&pin)?.trim() == "246810");

    let config = config.replace("/home/me", &home.path().display().to_string());
    let state = home.path().join(".local/state/hwsign");
    let path = private_config(
        &home.path().join(".config/hwsign"),
        &format!(
            "state_dir = {:?}\nsocket_path = {:?}\n{config}",
            state.display().to_string(),
            home.path().join("run/agent.sock").display().to_string()
        ),
    )?;
    let (ok, text) = check_config(&path)?;
    ensure!(ok && text.contains("configuration OK"), "{text}");
    ensure!(!text.contains("warning:"), "{text}");
    Ok(())
}

/// Every TOML block of the agent's configuration in the user docs parses as an agent
/// configuration (placeholders `hk1_…` filled with a valid key id).
#[test]
fn newuser_doc_config_snippets_are_valid() -> Result<()> {
    let mut checked = 0;
    for doc in ["README.md", "docs/BACKENDS.md", "docs/OPERATIONS.md"] {
        for block in doc_blocks(doc, "toml", "")? {
            // The verifier's configuration is checked by the verifier's own tests.
            if block.contains("route_rules") || block.contains("audience =") {
                continue;
            }
            let needs_pkcs11 = block.contains("[backends.pkcs11]");
            let needs_tpm = block.contains("[backends.tpm]");
            if (needs_pkcs11 && !cfg!(feature = "pkcs11")) || (needs_tpm && !cfg!(feature = "tpm"))
            {
                continue;
            }
            let block = block.replace("hk1_…", "hk1_0123456789abcdef0123456789abcdef");
            let text = format!("state_dir = \"/s\"\nsocket_path = \"/s/a.sock\"\n{block}");
            Config::parse(&text).map_err(|e| {
                anyhow::anyhow!("{doc}: {}\n{block}", hwsign_agent::error_chain(&e))
            })?;
            checked += 1;
        }
    }
    ensure!(checked >= 2, "only {checked} snippets found");
    Ok(())
}

/// Without `--config` and without `~/.config/hwsign/agent.toml`, `--check-config` says that no
/// file was read and the defaults apply.
#[test]
fn newuser_check_config_says_when_no_file_was_read() -> Result<()> {
    let home = tempfile::tempdir()?;
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--check-config")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_STATE_HOME", home.path().join(".local/state"))
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!(
        "configuration file: none ({} does not exist); using the built-in defaults",
        home.path().join(".config/hwsign/agent.toml").display()
    );
    ensure!(stdout.contains(&expected), "{stdout}");
    ensure!(stdout.contains("configuration OK"), "{stdout}");
    Ok(())
}
