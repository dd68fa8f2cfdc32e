//! `cargo xtask setup | test | demo | bench | install | package`: carp's developer workflows.

#[cfg(test)]
mod build_graph;
mod install;
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
    /// Install the agent, unit, example config, hook example, man page and completions.
    Install {
        /// Stage into this directory instead of /.
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Build the Debian package (cargo-deb) into target/debian and check it.
    Package,
    /// Remove what `install` put in place, and the pinned maps.
    Uninstall {
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Benchmarks side by side with ucarp and keepalived; writes BENCHMARKS.md.
    Bench {
        /// One short trial of each, as CI runs it, without writing the report.
        #[arg(long)]
        smoke: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test => test(),
        Cmd::Demo => setup::run().and_then(|()| demo()),
        Cmd::Install { root } => setup::run().and_then(|()| install::install(&root)),
        Cmd::Package => setup::run()
            .and_then(|()| install::package())
            .and_then(|deb| install::verify(&deb)),
        Cmd::Uninstall { root } => install::uninstall(&root),
        Cmd::Bench { smoke } => setup::run().and_then(|()| bench(smoke)),
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

/// Runs every benchmark and writes BENCHMARKS.md (and, from the benches, the raw numbers
/// in bench/*.json). `--smoke` runs one trial each, as CI does, without the report.
fn bench(smoke: bool) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = std::time::Instant::now();
    // Footprint and timings are for the binary operators run: the release build.
    cargo(&["build", "--release", "-p", "carp-agent"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let agent = target.join("release/carp-agent");
    let capture = |name: &str, env: &[(&str, &str)]| -> Result<String> {
        println!("==> cargo bench -p carp-tests --bench {name}");
        let out = Command::new(env!("CARGO"))
            .args(["bench", "--quiet", "-p", "carp-tests", "--bench", name])
            .envs(env.iter().copied())
            .env("CARP_AGENT_BIN", &agent)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{text}");
        if !out.status.success() {
            bail!("the {name} benchmark failed ({})", out.status);
        }
        Ok(text)
    };
    let smoke_env: &[(&str, &str)] = if smoke {
        &[
            ("REPEAT", "10000"),
            ("CALLS", "500"),
            ("TRIALS", "1"),
            ("FLOOD_SECS", "3"),
            ("LIVE_SECS", "0.5"),
            ("HOSTS", "3"),
            ("VHIDS", "6"),
            ("STEADY_SECS", "2"),
            // The benchmarks run their shortest variant and write no raw numbers.
            ("BENCH_SMOKE", "1"),
        ]
    } else {
        &[]
    };
    let xdp = capture("xdp", smoke_env)?;
    let fastpath = capture("fastpath", smoke_env)?;
    let peers = capture("peers", smoke_env)?;
    let scale = capture("scale", smoke_env)?;
    let exhaust = capture("exhaust", smoke_env)?;
    let reload = capture("reload", smoke_env)?;
    let balance = capture("balance", smoke_env)?;
    let handover = capture("handover", smoke_env)?;
    if smoke {
        return Ok(());
    }
    let uname = output(Command::new("uname").arg("-r"))?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let report = format!(
        "# carp benchmarks\n\nWritten by `cargo xtask bench` ({:.0?}); the raw numbers are in \
         bench/results.json, bench/exhaust.json and bench/reload.json. Machine: {cpu}, \
         {cores} cores, Linux {}. Everything runs in network namespaces on veth pairs and a \
         Linux bridge on this one machine; peers run \
         side by side in the same run with equal settings (advbase 1, backup advskew 100 or \
         its VRRP twin, priority 156).\n\n## XDP cost per path\n\n{xdp}\n## The fast path against an \
         empty program\n\n{fastpath}\n## Failover, \
         handover, flood, footprint\n{peers}\n## A full segment\n\n{scale}\n## Resource exhaustion \
         (issue #14)\n{exhaust}\n## Reload gap per change kind (issue #18)\n{reload}\n## \
         Load sharing: balanced groups (issue #16)\n\n{balance}\n## Planned events, a removed \
         VIP, a healed partition (issue #29)\n{handover}",
        started.elapsed(),
        uname.trim()
    );
    std::fs::write(root.join("BENCHMARKS.md"), report)?;
    println!("==> wrote BENCHMARKS.md and bench/*.json");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails when `who` left network namespaces or systemd test cgroups behind (the harness's
/// `leftovers` binary, which links carp-agent and so is built only after setup).
fn no_leftovers(who: &str) -> Result<()> {
    cargo(&["run", "--quiet", "-p", "carp-tests", "--bin", "leftovers"])
        .map_err(|e| anyhow::anyhow!("{who}: {e}"))
}

/// The seeds' three hosts (tests/src/bin/demo.rs), built and run once setup has installed
/// the eBPF toolchain: xtask itself links nothing that needs it.
fn demo() -> Result<()> {
    cargo(&["build", "--quiet", "-p", "carp-agent"])?;
    cargo(&["run", "--quiet", "-p", "carp-tests", "--bin", "demo"])
}

/// The feature that builds the end-to-end tests, which need root.
const ROOT_TESTS: &str = "carp-tests/root";

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
        "--features",
        ROOT_TESTS,
    ];
    cargo(&[&clippy[..], &["--", "-D", "warnings"]].concat())?;
    // The XDP program is linted for the target it runs on.
    println!(
        "==> rustup run {} cargo clippy -p carp-ebpf --target bpfel-unknown-none",
        setup::EBPF_TOOLCHAIN
    );
    run(Command::new("rustup")
        .args([
            "run",
            setup::EBPF_TOOLCHAIN,
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
    // The package as dpkg sees it, built before the tests: tests/tests/upgrade.rs installs
    // it (CARP_DEB) under systemd and upgrades it over itself.
    let deb = install::package()?;
    install::verify(&deb)?;
    let test = [
        "test",
        "--workspace",
        "--exclude",
        "carp-ebpf",
        "--features",
        ROOT_TESTS,
    ];
    println!("==> CARP_DEB={} cargo {}", deb.display(), test.join(" "));
    run(Command::new(env!("CARGO")).args(test).env("CARP_DEB", &deb))?;
    no_leftovers("the tests")?;
    // One short trial of every benchmark, so the bench code does not rot.
    bench(true)?;
    no_leftovers("the benchmarks")?;
    // Install/uninstall into a staging root.
    install::round_trip()?;
    println!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}
