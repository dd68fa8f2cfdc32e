//! `cargo xtask setup`: installs what carp needs and is missing, checks what it cannot
//! install. Idempotent: a second run only checks. A failure is one sentence naming what
//! failed and what to run.

use anyhow::{Context as _, Result, bail};
use std::{path::PathBuf, process::Command, time::Instant};

/// Debian packages: the tools the tests and demo drive, and the peers they compare with.
/// systemd, procps (sysctl) and groff-base are on a full Debian install, not on a minimal
/// one or in a container: the unit is tested under systemd as PID 1 (tests/src/systemd.rs),
/// carp.toml(5) with groff.
const PACKAGES: &[&str] = &[
    "systemd",
    "procps",
    "groff-base",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "arping",
    "tcpdump",
    "tshark",
    "ucarp",
    "keepalived",
    "xdp-tools",
    "ethtool",
    "nftables",
    // libfaketime: agents on a clock set ahead or stepped (tests/tests/strict_clock.rs).
    "faketime",
    "curl",
];

/// bpf-linker must use the LLVM of the nightly rustc that builds the eBPF crate (EBPF_TOOLCHAIN).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const MIN_KERNEL: (u32, u32) = (5, 15);

pub fn run() -> Result<()> {
    let started = Instant::now();
    check_root()?;
    check_kernel()?;
    install_packages()?;
    check_bpf_features()?;
    install_ebpf_toolchain()?;
    install_bpf_linker()?;
    install_cargo_deb()?;
    mount_bpffs()?;
    println!("setup: ready ({:.1?})", started.elapsed());
    Ok(())
}

fn ok(what: &str) {
    println!("setup: ok   {what}");
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "carp needs root (BPF, XDP, network namespaces): run this as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    ok("running as root");
    Ok(())
}

fn check_kernel() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read /proc/sys/kernel/osrelease: is this Linux?")?;
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < MIN_KERNEL {
        bail!(
            "kernel {} is too old: carp needs Linux >= {}.{}",
            release.trim(),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux missing): use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    ok(&format!("kernel {} with BTF", release.trim()));
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        ok("Debian packages");
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    let apt = |args: &[&str]| {
        crate::run(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    apt(&["update", "-qq"])
        .and_then(|()| apt(&[&["install", "-y", "-qq"][..], &missing].concat()))
        .with_context(|| {
            format!(
                "installing {} with apt-get failed: check the network and run `apt-get install {}`",
                missing.join(" "),
                missing.join(" ")
            )
        })?;
    ok("Debian packages");
    Ok(())
}

/// Asks bpftool (installed above) what this kernel can do.
fn check_bpf_features() -> Result<()> {
    let probe = output(Command::new("bpftool").args(["feature", "probe", "kernel"]))?;
    for (needle, what) in [
        ("program_type xdp is available", "XDP programs"),
        (
            "map_type ringbuf is available",
            "BPF ring buffers (Linux >= 5.8)",
        ),
        ("map_type percpu_array is available", "per-CPU array maps"),
    ] {
        if !probe.contains(needle) {
            bail!("this kernel lacks {what} (bpftool feature probe kernel): carp cannot run here");
        }
    }
    ok("kernel BPF: XDP, ring buffer, per-CPU maps");
    Ok(())
}

/// The toolchain that builds the eBPF program (`.cargo/config.toml`, read by carp-agent's
/// build script too): pinned, so that its LLVM is the one bpf-linker is built against
/// (BPF_LINKER_LLVM_FEATURE), whatever `nightly` the machine has or lacks.
pub const EBPF_TOOLCHAIN: &str = env!("CARP_EBPF_TOOLCHAIN");
const EBPF_LLVM_MAJOR: &str = "22";

/// Installs EBPF_TOOLCHAIN with rust-src (build-std) and clippy (the eBPF crate is linted
/// for its target) when they are missing.
fn install_ebpf_toolchain() -> Result<()> {
    let rustup = |args: &[&str]| output(Command::new("rustup").args(args));
    rustup(&["--version"])
        .context("rustup is missing: install it from https://rustup.rs, then run this again")?;
    let mut version = rustup(&["run", EBPF_TOOLCHAIN, "rustc", "-vV"])?;
    if version.is_empty() {
        println!(
            "setup: installing {EBPF_TOOLCHAIN} (LLVM {EBPF_LLVM_MAJOR}), which builds the eBPF program"
        );
        crate::run(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ]))
        .with_context(|| {
            format!("`rustup toolchain install {EBPF_TOOLCHAIN}` failed: check the network")
        })?;
        version = rustup(&["run", EBPF_TOOLCHAIN, "rustc", "-vV"])?;
    }
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(EBPF_LLVM_MAJOR) {
        bail!(
            "{EBPF_TOOLCHAIN} reports LLVM {llvm}, not {EBPF_LLVM_MAJOR}: reinstall it with \
             `rustup toolchain uninstall {EBPF_TOOLCHAIN}` and run this again"
        );
    }
    let components = rustup(&[
        "component",
        "list",
        "--toolchain",
        EBPF_TOOLCHAIN,
        "--installed",
    ])?;
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            println!("setup: installing {component} for {EBPF_TOOLCHAIN}");
            crate::run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                EBPF_TOOLCHAIN,
            ]))
            .with_context(|| {
                format!("`rustup component add {component} --toolchain {EBPF_TOOLCHAIN}` failed")
            })?;
        }
    }
    ok(&format!(
        "{EBPF_TOOLCHAIN} (LLVM {llvm}) with rust-src and clippy"
    ));
    Ok(())
}

fn install_bpf_linker() -> Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.trim() == format!("bpf-linker {BPF_LINKER_VERSION}") {
        ok(&format!("bpf-linker {BPF_LINKER_VERSION}"));
        return Ok(());
    }
    // bpf-linker links against the LLVM shared library of the nightly rustc, found in its
    // sysroot under a versioned name; LLVM_PREFIX/lib must offer it as libLLVM.so too.
    let sysroot = output(Command::new("rustup").args([
        "run",
        EBPF_TOOLCHAIN,
        "rustc",
        "--print",
        "sysroot",
    ]))?;
    let libdir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("cannot read {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: reinstall the nightly toolchain",
                libdir.display()
            )
        })?;
    let home = std::env::var("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(".cache/carp/llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for name in [llvm.as_str(), "libLLVM.so"] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&llvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {llvm} (about a minute)");
    crate::run(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed: see cargo's output above")?;
    ok(&format!("bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}

/// cargo-deb builds the `.deb` (`cargo xtask package`, and the package check of `test`).
fn install_cargo_deb() -> Result<()> {
    let version = crate::install::CARGO_DEB_VERSION;
    let have = output(Command::new(env!("CARGO")).args(["deb", "--version"])).unwrap_or_default();
    if have.trim().ends_with(version) {
        ok(&format!("cargo-deb {version}"));
        return Ok(());
    }
    println!("setup: building cargo-deb {version} (about 35 s)");
    crate::run(Command::new(env!("CARGO")).args([
        "install",
        "cargo-deb",
        "--version",
        version,
        "--locked",
    ]))
    .context("building cargo-deb failed: see cargo's output above")?;
    ok(&format!("cargo-deb {version}"));
    Ok(())
}

fn mount_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        ok("bpffs at /sys/fs/bpf");
        return Ok(());
    }
    crate::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs at /sys/fs/bpf failed: run `mount -t bpf bpf /sys/fs/bpf`")?;
    ok("bpffs mounted at /sys/fs/bpf");
    Ok(())
}
