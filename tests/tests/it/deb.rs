//! The Debian package `hwsign` (docs/OPERATIONS.md "Packages"): `scripts/package-deb` builds it
//! with cargo-deb from the binaries the test run already has (`--no-build`, this test's profile:
//! no second build), `dpkg-deb` shows what it holds, and dpkg installs, removes and purges it.
//!
//! The install goes into a private root, not into the machine running the tests: `dpkg
//! --root=DIR --force-script-chrootless` unpacks under DIR and runs the package's own maintainer
//! scripts on this machine with `DPKG_ROOT=DIR`, which the scripts cargo-deb generates honour
//! (`systemd-sysusers --root`, `deb-systemd-helper`). So the postinst really creates the system
//! user (in DIR/etc/passwd), the systemd helpers really record and purge their state, and dpkg
//! really checks the package's dependencies: the private database holds this machine's entries
//! for the packages the .deb depends on, and nothing else. Other tests and other checkouts on the
//! same machine are not disturbed, and nothing is left behind. dpkg needs root for this (it owns
//! the files it unpacks); CI runs as root, and a run without root fails with the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use hwsign_test_support::binaries::bin_path;

/// Runs `command`, failing with its stderr unless it succeeds; returns its stdout.
fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// A PATH with the sbin directories, where dpkg looks for ldconfig and start-stop-daemon.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the .deb into `out` from this test run's binaries; returns its path.
fn package(out: &Path) -> Result<PathBuf> {
    let cli = bin_path("hwsign")?;
    bin_path("hwsign-agent")?;
    // target/debug → profile dev; target/<name> → profile <name>.
    let profile = match cli
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
    {
        Some("debug") => "dev".to_owned(),
        Some(name) => name.to_owned(),
        None => bail!("no profile directory above {}", cli.display()),
    };
    let root = hwsign_e2e::sdk::repo_root()?;
    ensure!(
        Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "cargo-deb is missing (scripts/test installs it: cargo install cargo-deb --version 3.8.0 --locked)"
    );
    run(Command::new(root.join("scripts/package-deb"))
        .args(["--no-build", "--profile", &profile, "--fast", "--output"])
        .arg(out))?;
    let mut debs = std::fs::read_dir(out)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    debs.retain(|p| p.extension().is_some_and(|e| e == "deb"));
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        other => bail!("expected one .deb, got {other:?}"),
    }
}

/// Every path under `root` (files, directories, links), relative, for before/after comparisons.
fn tree(root: &Path) -> Result<BTreeSet<String>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            into.insert(path.strip_prefix(root)?.to_string_lossy().into_owned());
            if path.symlink_metadata()?.is_dir() {
                walk(root, &path, into)?;
            }
        }
        Ok(())
    }
    let mut paths = BTreeSet::new();
    walk(root, root, &mut paths)?;
    Ok(paths)
}

/// A private dpkg root whose database holds this machine's status entries of the packages
/// `depends` needs (the first installed alternative of each), and no other package.
fn private_root(dir: &Path, depends: &str) -> Result<()> {
    let admin = dir.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(sub))?;
    }
    // Directories every Debian system has (systemd's), where deb-systemd-helper keeps its state
    // and masks: they stay after a purge, as they would there.
    for sub in ["etc/systemd/system", "var/lib/systemd", "var/log"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let mut status = String::new();
    for dependency in depends.split(',') {
        let installed = dependency.split('|').find_map(|alternative| {
            let name = alternative.split_whitespace().next()?;
            let stanza = Command::new("dpkg-query")
                .args(["-s", name])
                .output()
                .ok()?;
            let text = String::from_utf8(stanza.stdout).ok()?;
            (stanza.status.success() && text.contains("Status: install ok installed"))
                .then(|| (name.to_owned(), text))
        });
        let Some((name, stanza)) = installed else {
            bail!("no alternative of dependency {dependency:?} is installed on this machine");
        };
        // One stanza per package (dpkg-query prints one per architecture for Multi-Arch: same).
        let first = stanza.split("\n\n").next().unwrap_or_default().trim_end();
        status.push_str(first);
        status.push_str("\n\n");
        std::fs::write(admin.join(format!("info/{name}.list")), "")?;
    }
    std::fs::write(admin.join("status"), status)?;
    std::fs::write(admin.join("available"), "")?;
    Ok(())
}

fn dpkg(root: &Path, args: &[&str]) -> Result<String> {
    run(Command::new("dpkg")
        .env("PATH", PATH)
        .arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .args(args))
}

/// The package's fields, contents, conffiles and maintainer scripts as `dpkg-deb` shows them.
fn check_contents(deb: &Path) -> Result<String> {
    let field = |name: &str| run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    ensure!(field("Package")?.trim() == "hwsign");
    let version = field("Version")?;
    ensure!(
        version.trim() == format!("{}-1", env!("CARGO_PKG_VERSION")),
        "version {version:?} is not the workspace's"
    );
    let depends = field("Depends")?.trim().to_owned();
    // `$auto`: the shared libraries the binaries link (libc; libtss2 for the TPM backend).
    for needed in ["libc6", "libtss2-esys", "systemd | systemd-sysusers"] {
        ensure!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    for path in [
        "./usr/bin/hwsign",
        "./usr/bin/hwsign-agent",
        "./etc/hwsign/agent.toml",
        "./usr/lib/systemd/system/hwsign-agent.service",
        "./usr/lib/systemd/system/hwsign-agent.socket",
        "./usr/lib/systemd/system/hwsign-agent.service.d/packaged.conf",
        "./usr/lib/systemd/user/hwsign-agent.service",
        "./usr/lib/systemd/user/hwsign-agent.socket",
        "./usr/lib/systemd/user/hwsign-agent.service.d/packaged.conf",
        "./usr/lib/sysusers.d/hwsign.conf",
        "./usr/lib/tmpfiles.d/hwsign-agent.conf",
        "./usr/share/doc/hwsign/copyright",
        "./usr/share/doc/hwsign/README.md",
    ] {
        ensure!(
            contents.lines().any(|l| l.ends_with(path)),
            "the package lacks {path}:\n{contents}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    for part in ["conffiles", "postinst", "postrm"] {
        ensure!(
            info.contains(part),
            "no {part} in the control part:\n{info}"
        );
    }
    let control = tempfile::tempdir()?;
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(control.path()))?;
    let conffiles = std::fs::read_to_string(control.path().join("conffiles"))?;
    ensure!(
        conffiles.lines().collect::<Vec<_>>() == ["/etc/hwsign/agent.toml"],
        "conffiles: {conffiles:?}"
    );
    let postinst = std::fs::read_to_string(control.path().join("postinst"))?;
    ensure!(
        postinst.contains("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} hwsign.conf"),
        "{postinst}"
    );
    Ok(depends)
}

/// Builds the package, checks what it holds, installs it into a private root (maintainer scripts
/// run), runs the installed binaries, finds the system user, then removes it (the edited conffile
/// stays) and purges it (nothing of the package is left).
#[test]
fn deb_builds_installs_removes_and_purges() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "deb_* installs the package with dpkg into a private root, which needs root \
             (CI runs scripts/test as root); run this test as root"
        );
    }
    let out = tempfile::tempdir()?;
    let deb = package(out.path())?;
    let depends = check_contents(&deb)?;

    let root_dir = tempfile::tempdir()?;
    let root = root_dir.path();
    private_root(root, &depends)?;
    let before = tree(root)?;
    dpkg(root, &["-i", &deb.to_string_lossy()])?;

    let status = dpkg(root, &["-s", "hwsign"])?;
    ensure!(status.contains("Status: install ok installed"), "{status}");
    for (binary, name) in [("hwsign", "hwsign"), ("hwsign-agent", "hwsign-agent")] {
        let version = run(Command::new(root.join("usr/bin").join(binary)).arg("--version"))?;
        ensure!(
            version.trim() == format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{binary} --version: {version}"
        );
    }
    // The conffile as installed (root's, 0644) is one the agent accepts.
    run(Command::new(root.join("usr/bin/hwsign-agent"))
        .arg("--config")
        .arg(root.join("etc/hwsign/agent.toml"))
        .arg("--check-config"))?;
    // The postinst ran systemd-sysusers in the root: the agent's account and group exist.
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    let user = passwd
        .lines()
        .find(|l| l.starts_with("hwsign:"))
        .with_context(|| format!("no user hwsign in the root's passwd:\n{passwd}"))?;
    ensure!(
        user.ends_with(":/var/lib/hwsign:/usr/sbin/nologin") || user.ends_with(":/bin/false"),
        "{user}"
    );
    let group = std::fs::read_to_string(root.join("etc/group"))?;
    ensure!(group.lines().any(|l| l.starts_with("hwsign:")), "{group}");
    // The packaged drop-ins run the packaged binary with the units' own arguments.
    for kind in ["system", "user"] {
        let unit_dir = root.join("usr/lib/systemd").join(kind);
        let exec_start = |text: &str| {
            text.lines()
                .rfind(|l| l.starts_with("ExecStart=") && l.len() > "ExecStart=".len())
                .map(str::to_owned)
        };
        let unit = std::fs::read_to_string(unit_dir.join("hwsign-agent.service"))?;
        let drop_in =
            std::fs::read_to_string(unit_dir.join("hwsign-agent.service.d/packaged.conf"))?;
        let wanted = exec_start(&unit)
            .context("no ExecStart in the unit")?
            .replace("/usr/local/bin/", "/usr/bin/");
        ensure!(
            drop_in.lines().any(|l| l == "ExecStart=")
                && exec_start(&drop_in).as_deref() == Some(wanted.as_str()),
            "{kind} drop-in does not run {wanted}:\n{drop_in}"
        );
    }
    // The units are installed, not enabled: the administrator sets allowed_uids first.
    ensure!(
        !root
            .join("etc/systemd/system/sockets.target.wants")
            .exists()
    );

    // An administrator's edit: a remove keeps the conffile, a purge deletes it.
    let conffile = root.join("etc/hwsign/agent.toml");
    let mut edited = std::fs::read_to_string(&conffile)?;
    edited.push_str("# edited by the administrator\n");
    std::fs::write(&conffile, &edited)?;

    dpkg(root, &["-r", "hwsign"])?;
    ensure!(!root.join("usr/bin/hwsign").exists() && !root.join("usr/bin/hwsign-agent").exists());
    ensure!(
        !root
            .join("usr/lib/systemd/system/hwsign-agent.service")
            .exists()
    );
    ensure!(
        std::fs::read_to_string(&conffile)? == edited,
        "remove lost the edited conffile"
    );
    let status = dpkg(root, &["-s", "hwsign"])?;
    ensure!(
        status.contains("Status: deinstall ok config-files"),
        "{status}"
    );

    dpkg(root, &["-P", "hwsign"])?;
    ensure!(!conffile.exists(), "purge left the conffile");
    // Left: the database, dpkg's log, and the account and its lock file (Debian keeps system
    // users on purge, so that files they own elsewhere never pass to a reused uid). Nothing else:
    // no unit, no drop-in, no conffile, no deb-systemd-helper state or mask.
    let after = tree(root)?;
    let left: Vec<&String> = after
        .difference(&before)
        .filter(|path| {
            !(path.starts_with("var/lib/dpkg/")
                || path.as_str() == "var/log/dpkg.log"
                || path.as_str() == "etc/.pwd.lock"
                || ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"]
                    .iter()
                    .any(|account| path.trim_end_matches('-') == *account))
        })
        .collect();
    ensure!(left.is_empty(), "left after purge: {left:?}");
    let lost: Vec<&String> = before
        .difference(&after)
        .filter(|path| !path.starts_with("var/lib/dpkg/"))
        .collect();
    ensure!(lost.is_empty(), "removed from the root: {lost:?}");
    Ok(())
}
