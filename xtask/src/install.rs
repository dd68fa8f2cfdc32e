//! `cargo xtask install | uninstall [--root DIR]` and `cargo xtask package`: the files an
//! operator expects, where Debian expects them. One list for both, the `.deb`'s assets in
//! carp-agent/Cargo.toml; `--root` stages into a directory.

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Asset sources under this prefix are build outputs in the target directory.
const BUILT: &str = "target/release/";
/// Files the binary writes itself (`carp-agent generate WHAT`), under BUILT.
const GENERATED: &[(&str, &str)] = &[
    ("man", "generated/carp-agent.8"),
    ("man-config", "generated/carp.toml.5"),
    ("bash", "generated/carp-agent.bash"),
    ("zsh", "generated/_carp-agent"),
    ("fish", "generated/carp-agent.fish"),
];
const PINS: &str = "sys/fs/bpf/carp";
/// cargo-deb, installed by setup when missing.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}
#[derive(Deserialize)]
struct Package {
    metadata: Metadata,
}
#[derive(Deserialize)]
struct Metadata {
    deb: Deb,
}
#[derive(Deserialize)]
struct Deb {
    name: String,
    assets: Vec<(String, String, String)>,
}

/// One installed file: where it comes from, where it goes (relative to the root), its mode.
struct Asset {
    src: PathBuf,
    dst: String,
    mode: u32,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn release_dir() -> PathBuf {
    target_dir().join("release")
}

fn deb() -> Result<Deb> {
    let path = workspace().join("carp-agent/Cargo.toml");
    let text = std::fs::read_to_string(&path)?;
    let manifest: Manifest = toml::from_str(&text)
        .with_context(|| format!("{}: [package.metadata.deb]", path.display()))?;
    Ok(manifest.package.metadata.deb)
}

fn assets() -> Result<Vec<Asset>> {
    deb()?
        .assets
        .into_iter()
        .map(|(src, dst, mode)| {
            let src = match src.strip_prefix(BUILT) {
                Some(rel) => release_dir().join(rel),
                None => workspace().join("carp-agent").join(src),
            };
            let mode = u32::from_str_radix(&mode, 8).with_context(|| format!("mode {mode}"))?;
            Ok(Asset { src, dst, mode })
        })
        .collect()
}

/// The release binary, and what it generates about itself.
fn build() -> Result<()> {
    crate::cargo(&["build", "--release", "-p", "carp-agent"])?;
    let bin = release_dir().join("carp-agent");
    for (what, file) in GENERATED {
        let out = Command::new(&bin).args(["generate", what]).output()?;
        anyhow::ensure!(out.status.success(), "carp-agent generate {what} failed");
        let dst = release_dir().join(file);
        std::fs::create_dir_all(dst.parent().context("no parent")?)?;
        std::fs::write(&dst, &out.stdout)?;
    }
    Ok(())
}

pub fn install(root: &Path) -> Result<()> {
    build()?;
    for a in assets()? {
        let dst = root.join(&a.dst);
        std::fs::create_dir_all(dst.parent().context("no parent")?)?;
        std::fs::copy(&a.src, &dst)
            .with_context(|| format!("copying {} to {}", a.src.display(), dst.display()))?;
        std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(a.mode))?;
        println!("install: {}", dst.display());
    }
    let etc = root.join("etc/carp");
    println!(
        "install: done. Next: copy {0}/carp.toml.example to {0}/carp.toml, put the password \
         in {0}/carp.pass (mode 600), `carp-agent check`, then \
         `systemctl daemon-reload && systemctl enable --now carp-agent`.",
        etc.display()
    );
    Ok(())
}

/// `systemctl` with these arguments; injected so a test can see the calls.
type Systemctl<'a> = &'a mut dyn FnMut(&[&str]) -> Result<()>;

pub fn uninstall(root: &Path) -> Result<()> {
    // The host's own service only: a staged root has none running, and without systemd
    // as PID 1 there is nothing to stop (the check prerm makes too).
    let under_systemd = root == Path::new("/") && Path::new("/run/systemd/system").is_dir();
    let mut systemctl = |args: &[&str]| crate::run(Command::new("systemctl").args(args));
    uninstall_with(root, under_systemd.then_some(&mut systemctl))
}

/// Removes the assets and the pins; with `systemctl`, stops and disables the unit first,
/// as the `.deb`'s prerm does, so a running agent bows out before its binary goes.
fn uninstall_with(root: &Path, mut systemctl: Option<Systemctl>) -> Result<()> {
    let assets = assets()?;
    let unit = unit(&assets)?;
    if let Some(systemctl) = systemctl.as_mut()
        && root.join(unit).is_file()
    {
        let unit_name = unit.file_name().context("unit path")?.to_string_lossy();
        systemctl(&["disable", "--now", &unit_name])?;
        println!("uninstall: stopped and disabled {unit_name}");
    }
    for a in &assets {
        let p = root.join(&a.dst);
        match std::fs::remove_file(&p) {
            Ok(()) => println!("uninstall: removed {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    let _ = std::fs::remove_dir(root.join("usr/share/doc/carp/hooks"));
    let _ = std::fs::remove_dir(root.join("usr/share/doc/carp"));
    // The agent's pinned maps: a stopped agent leaves them for inspection.
    let pins = root.join(PINS);
    if pins.exists() {
        std::fs::remove_dir_all(&pins).with_context(|| format!("removing {}", pins.display()))?;
        println!("uninstall: removed {}", pins.display());
    }
    if let Some(systemctl) = systemctl {
        systemctl(&["daemon-reload"])?;
    }
    println!("uninstall: done; /etc/carp/carp.toml and the password file are left in place");
    Ok(())
}

/// The systemd unit among the assets.
fn unit(assets: &[Asset]) -> Result<&Path> {
    assets
        .iter()
        .map(|a| Path::new(&a.dst))
        .find(|dst| dst.extension() == Some("service".as_ref()))
        .context("no systemd unit among the assets")
}

/// What an operator has in place before uninstalling: pins a stopped agent left (one
/// `[agent] netns` directory among them) and their own configuration.
const LEFT_PIN: &str = "sys/fs/bpf/carp/hosta/CARP_STATS";
const OWN_FILES: &[&str] = &["etc/carp/carp.toml", "etc/carp/carp.pass"];

fn put_operator_files(root: &Path) -> Result<()> {
    for f in OWN_FILES.iter().chain([&LEFT_PIN]) {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().context("no parent")?)?;
        std::fs::write(&p, "operator's")?;
    }
    Ok(())
}

/// Fails unless exactly the operator's own files are left under `root`.
fn only_operator_files_left(root: &Path) -> Result<()> {
    let mut left = files_under(root)?;
    left.sort();
    let mut own: Vec<PathBuf> = OWN_FILES.iter().map(|f| root.join(f)).collect();
    own.sort();
    anyhow::ensure!(left == own, "uninstall left {left:?}, want only {own:?}");
    Ok(())
}

/// Installs into a staging root and uninstalls again: every file lands, the pins go, and
/// only the operator's own files in /etc/carp stay.
pub fn round_trip() -> Result<()> {
    // Removed when dropped, also on the way out with an error.
    let stage = tempfile::Builder::new().prefix("carp-stage").tempdir()?;
    let root = stage.path();
    install(root)?;
    for a in assets()? {
        anyhow::ensure!(root.join(&a.dst).is_file(), "install missed {}", a.dst);
    }
    put_operator_files(root)?;
    uninstall(root)?;
    only_operator_files_left(root)?;
    println!("install: staged install and uninstall leave only the operator's files");
    Ok(())
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Builds the `.deb` with cargo-deb and returns its path.
pub fn package() -> Result<PathBuf> {
    build()?;
    let out = Command::new(env!("CARGO"))
        .args(["deb", "--no-build", "-p", "carp-agent", "--output"])
        .arg(target_dir().join("debian"))
        .current_dir(workspace())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo deb: `cargo xtask setup` installs it")?;
    if !out.status.success() {
        bail!("cargo deb failed ({})", out.status);
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    println!("package: {}", path.display());
    Ok(path)
}

/// Checks a built `.deb` as dpkg sees it: every asset at its place with its mode, the
/// maintainer scripts, and the packaged binary and unit usable as shipped.
pub fn verify(deb_file: &Path) -> Result<()> {
    let listing = crate::output(Command::new("dpkg-deb").arg("--contents").arg(deb_file))?;
    for a in assets()? {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("./{}", a.dst)))
            .with_context(|| format!("{} is not in the package", a.dst))?;
        let perms = line.split_whitespace().next().unwrap_or_default();
        let want = unix_mode(a.mode);
        anyhow::ensure!(perms == want, "{}: mode {perms}, want {want}", a.dst);
    }
    let control = crate::output(Command::new("dpkg-deb").arg("--info").arg(deb_file))?;
    for script in ["postinst", "prerm", "postrm"] {
        anyhow::ensure!(control.contains(script), "the package has no {script}");
    }
    anyhow::ensure!(
        control.contains(&format!("Package: {}", deb()?.name)),
        "unexpected package name in\n{control}"
    );
    let extracted = tempfile::Builder::new().prefix("carp-deb").tempdir()?;
    let dir = extracted.path();
    crate::run(Command::new("dpkg-deb").arg("-x").arg(deb_file).arg(dir))?;
    let version = crate::output(Command::new(dir.join("usr/sbin/carp-agent")).arg("--version"))?;
    anyhow::ensure!(
        version.starts_with("carp-agent "),
        "packaged binary: {version:?}"
    );
    // Unit syntax, directives and commands, with the packaged binary at its packaged
    // path: a private mount namespace shows it there without installing anything.
    let unit = dir.join("lib/systemd/system/carp-agent.service");
    crate::run(
        Command::new("unshare")
            .args(["--mount", "sh", "-ec"])
            .arg(format!(
                "mount -t tmpfs carp-verify /usr/sbin && cp {}/usr/sbin/carp-agent /usr/sbin/ && \
         systemd-analyze verify --man=no {}",
                dir.display(),
                unit.display()
            )),
    )?;
    maintainer_scripts(deb_file)?;
    println!("package: contents, modes, scripts, binary and unit checked");
    Ok(())
}

/// Runs the package's maintainer scripts as dpkg does on install, upgrade and purge
/// (postinst configure; prerm upgrade, postinst configure OLD-VERSION; prerm remove,
/// postrm remove, postrm purge) in a private mount namespace: systemd looks like PID 1
/// (/run/systemd/system), `systemctl` and `deb-systemd-invoke` are stand-ins that log
/// their arguments, and /etc and /sys/fs/bpf are tmpfs holding what an operator has. The
/// unit must not be enabled or started on install, only try-restarted on upgrade (not
/// stopped before it), stopped and disabled on removal; the pins must go and
/// /etc/carp/carp.toml must stay. tests/tests/upgrade.rs runs the real thing.
fn maintainer_scripts(deb_file: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("carp-scripts").tempdir()?;
    let dir = tmp.path();
    crate::run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb_file)
            .arg(dir.join("control")),
    )?;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin)?;
    for tool in ["systemctl", "deb-systemd-invoke"] {
        let fake = bin.join(tool);
        std::fs::write(&fake, "#!/bin/sh\necho \"$PHASE $*\" >> \"$LOG\"\n")?;
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let log = dir.join("systemctl.log");
    let left = dir.join("left");
    crate::run(
        Command::new("unshare")
            .args(["--mount", "sh", "-ec"])
            .arg(
                "mount -t tmpfs carp-verify /run && mkdir -p /run/systemd/system
                 mount -t tmpfs carp-verify /etc && mkdir /etc/carp && : > /etc/carp/carp.toml
                 mount -t tmpfs carp-verify /sys/fs/bpf
                 mkdir -p /sys/fs/bpf/carp/hosta && : > /sys/fs/bpf/carp/hosta/CARP_STATS
                 PHASE=postinst \"$C\"/postinst configure
                 PHASE=prerm-upgrade \"$C\"/prerm upgrade 0.0.1-1
                 PHASE=postinst-upgrade \"$C\"/postinst configure 0.0.1-1
                 PHASE=prerm \"$C\"/prerm remove
                 PHASE=postrm \"$C\"/postrm remove
                 PHASE=postrm \"$C\"/postrm purge
                 find /etc /sys/fs/bpf -mindepth 1 > \"$LEFT\"",
            )
            .env("C", dir.join("control"))
            .env("LOG", &log)
            .env("LEFT", &left)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
    )?;
    let assets = assets()?;
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let calls: Vec<(&str, &str)> = calls.lines().filter_map(|l| l.split_once(' ')).collect();
    let enables = |(_, args): &&(&str, &str)| {
        let verb = args.split_whitespace().next().unwrap_or_default();
        [
            "enable",
            "start",
            "restart",
            "reload-or-restart",
            "try-restart",
        ]
        .contains(&verb)
    };
    anyhow::ensure!(
        !calls.iter().any(|c| c.0 == "postinst" && enables(&c)),
        "postinst enables or starts the unit: {calls:?}"
    );
    // An upgrade restarts the unit only if it runs, and does not stop it first.
    let unit_name = unit(&assets)?
        .file_name()
        .context("unit path")?
        .to_string_lossy();
    let restart = format!("try-restart {unit_name}");
    let upgrade: Vec<&str> = calls
        .iter()
        .filter(|c| c.0.ends_with("-upgrade"))
        .map(|c| c.1)
        .filter(|args| !args.starts_with("daemon-reload"))
        .collect();
    anyhow::ensure!(
        upgrade == [restart.as_str()],
        "on upgrade want only `{restart}`, got {upgrade:?}"
    );
    anyhow::ensure!(
        calls.contains(&("prerm", format!("disable --now {unit_name}").as_str())),
        "prerm does not stop and disable the unit: {calls:?}"
    );
    let left = std::fs::read_to_string(&left)?;
    let mut left: Vec<&str> = left.lines().collect();
    left.sort_unstable();
    anyhow::ensure!(
        left == ["/etc/carp", "/etc/carp/carp.toml"],
        "after purge, want only /etc/carp/carp.toml left, found {left:?}"
    );
    Ok(())
}

/// `ls -l`'s spelling of a regular file's mode, as `dpkg-deb --contents` prints it.
fn unix_mode(mode: u32) -> String {
    let bits = ["r", "w", "x"];
    (0..9)
        .map(|i| {
            if mode & (0o400 >> i) != 0 {
                bits[i % 3]
            } else {
                "-"
            }
        })
        .fold(String::from("-"), |s, b| s + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README: `cargo xtask uninstall` "under systemd stops and disables the service first
    /// ... and removes the pinned maps under /sys/fs/bpf/carp; your own files in /etc/carp
    /// stay". The stand-in systemctl is called with the unit still in place.
    #[test]
    fn uninstall_stops_the_service_first_removes_the_pins_and_keeps_the_operators_files() {
        let stage = tempfile::tempdir().unwrap();
        let root = stage.path();
        let assets = assets().unwrap();
        for a in &assets {
            let p = root.join(&a.dst);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "installed").unwrap();
        }
        put_operator_files(root).unwrap();
        let unit_file = root.join(unit(&assets).unwrap());
        let mut calls = Vec::new();
        let mut systemctl = |args: &[&str]| {
            calls.push((
                args.join(" "),
                unit_file.is_file(),
                root.join(LEFT_PIN).exists(),
            ));
            Ok(())
        };
        uninstall_with(root, Some(&mut systemctl)).unwrap();
        assert_eq!(
            calls,
            [
                ("disable --now carp-agent.service".to_string(), true, true),
                ("daemon-reload".to_string(), false, false),
            ]
        );
        only_operator_files_left(root).unwrap();
    }

    /// README: "`systemd-analyze security --offline=true dist/carp-agent.service` rates it
    /// 4.1 OK". The figure is read from the README; `--threshold` (tenths) makes
    /// systemd-analyze fail when the exposure is above it, so the unit must rate exactly
    /// it: at most the figure, and above a tenth less.
    #[test]
    fn the_unit_rates_as_the_readme_says() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let (_, rest) = readme
            .split_once("dist/carp-agent.service` rates it")
            .unwrap();
        let figure: f64 = rest.split_whitespace().next().unwrap().parse().unwrap();
        let tenths = (figure * 10.0).round() as u32;
        let at_most = |tenths: u32| {
            Command::new("systemd-analyze")
                .args(["security", "--offline=true"])
                .arg(format!("--threshold={tenths}"))
                .arg(root.join("dist/carp-agent.service"))
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(
            at_most(tenths),
            "the unit rates above the README's {figure}"
        );
        assert!(
            !at_most(tenths - 1),
            "the unit rates below the README's {figure}: update the README"
        );
    }
}
