//! `cargo xtask setup`: installs what carp needs and is missing, checks what it cannot
//! install. Idempotent: a second run only checks. A failure is one sentence naming what
//! failed and what to run.

use anyhow::{Context as _, Result, bail};
use std::{path::PathBuf, process::Command, time::Instant};

/// Debian packages: the tools the tests and demo drive, and the peers they compare with.
const PACKAGES: &[&str] = &[
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
    "curl",
];

/// bpf-linker must use the LLVM of the nightly rustc that builds the eBPF crate.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const MIN_KERNEL: (u32, u32) = (5, 15);

pub fn run() -> Result<()> {
    let started = Instant::now();
    check_root()?;
    check_kernel()?;
    install_packages()?;
    check_bpf_features()?;
    install_nightly_components()?;
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

/// The nightly setup installs when there is none: its LLVM is the one bpf-linker
/// (BPF_LINKER_LLVM_FEATURE) is built against.
const NIGHTLY_DATED: &str = "nightly-2026-05-20";
const NIGHTLY_LLVM_MAJOR: &str = "22";

/// The eBPF crate is built with a toolchain named `nightly`, its rust-src (build-std) and
/// linted with its clippy. Without one, setup installs NIGHTLY_DATED and links it under
/// that name; a nightly with another LLVM is left alone and named in the error.
fn install_nightly_components() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is missing: install it from https://rustup.rs, then run this again")?;
    if !toolchains
        .lines()
        .any(|l| l.split_whitespace().next() == Some("nightly") || l.starts_with("nightly-x86_64"))
    {
        println!(
            "setup: installing {NIGHTLY_DATED} as `nightly` (LLVM {NIGHTLY_LLVM_MAJOR}, for the eBPF program)"
        );
        crate::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY_DATED,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ]))
        .with_context(|| format!("`rustup toolchain install {NIGHTLY_DATED}` failed"))?;
        let sysroot = output(Command::new("rustup").args([
            "run",
            NIGHTLY_DATED,
            "rustc",
            "--print",
            "sysroot",
        ]))?;
        crate::run(Command::new("rustup").args(["toolchain", "link", "nightly", sysroot.trim()]))
            .with_context(|| format!("`rustup toolchain link nightly` to {NIGHTLY_DATED} failed"))?;
    }
    let version = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(NIGHTLY_LLVM_MAJOR) {
        bail!(
            "the toolchain named `nightly` has LLVM {llvm}, bpf-linker {BPF_LINKER_VERSION} here needs LLVM \
             {NIGHTLY_LLVM_MAJOR}: run `rustup toolchain install {NIGHTLY_DATED} && rustup toolchain link nightly \
             \"$(rustup run {NIGHTLY_DATED} rustc --print sysroot)\"`"
        );
    }
    // Read from the toolchain itself, not `rustup component list`, which a linked
    // toolchain does not answer.
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let have_src = PathBuf::from(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .is_dir();
    let have_clippy = Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    for (component, present) in [("rust-src", have_src), ("clippy", have_clippy)] {
        if !present {
            println!("setup: installing {component} for nightly");
            crate::run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                "nightly",
            ]))
            .with_context(|| {
                format!("`rustup component add {component} --toolchain nightly` failed")
            })?;
        }
    }
    ok(&format!("nightly (LLVM {llvm}) with rust-src and clippy"));
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
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
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
