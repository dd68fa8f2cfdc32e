//! `cargo xtask setup | test | demo | bench`: carp's developer workflows.

mod demo;
mod setup;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use std::process::Command;

#[derive(Parser)]
#[command(about = "carp developer workflows")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, rust-src, bpf-linker, bpffs) and check the kernel.
    Setup,
    /// Setup, then fmt, clippy, unit, BPF test_run and namespace tests.
    Test,
    /// Setup, build, and run the seeds' three-host layout in namespaces.
    Demo,
    /// Benchmarks: XDP cost per path (the peer comparisons arrive with their issue).
    Bench,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test => test(),
        Cmd::Demo => setup::run().and_then(|()| demo::run()),
        Cmd::Bench => setup::run().and_then(|()| bench()),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs `cmd` with inherited output, failing when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    run(Command::new(env!("CARGO")).args(args))
}

fn bench() -> Result<()> {
    println!("==> XDP cost per path (BPF_PROG_TEST_RUN; kernel.bpf_stats_enabled off)");
    cargo(&["bench", "--quiet", "-p", "carp-tests", "--bench", "xdp"])
}

fn test() -> Result<()> {
    setup::run()?;
    let started = std::time::Instant::now();
    cargo(&["fmt", "--all", "--check"])?;
    let clippy = [
        "clippy",
        "--workspace",
        "--exclude",
        "carp-ebpf",
        "--all-targets",
    ];
    cargo(&[&clippy[..], &["--", "-D", "warnings"]].concat())?;
    // The XDP program is linted for the target it runs on.
    println!("==> cargo +nightly clippy -p carp-ebpf --target bpfel-unknown-none");
    run(Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "carp-ebpf",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]))?;
    // The namespace tests run the carp-agent binary: build it first, so it is never stale.
    cargo(&["build", "-p", "carp-agent"])?;
    cargo(&["test", "--workspace", "--exclude", "carp-ebpf"])?;
    let left = carp_tests::netns::leftovers()?;
    if !left.is_empty() {
        bail!(
            "the tests left network namespaces behind: {}",
            left.join(" ")
        );
    }
    println!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}
