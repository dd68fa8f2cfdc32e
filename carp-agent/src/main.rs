//! carp-agent: the CARP failover agent. The election daemon is not here yet; what exists is
//! the XDP data plane, which `stats` attaches and reads.

use anyhow::Result;
use aya::programs::XdpMode;
use carp_agent::xdp::DataPlane;
use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "CARP failover agent with an XDP fast path")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the XDP program to an interface for a while, then print what it counted.
    Stats {
        /// Interface to attach to.
        #[arg(short, long)]
        interface: String,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = Mode::Skb)]
        mode: Mode,
        /// How long to count, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Generic XDP, works on every interface.
    Skb,
    /// Driver (native) XDP.
    Native,
}

impl From<Mode> for XdpMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Skb => XdpMode::Skb,
            Mode::Native => XdpMode::Driver,
        }
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("carp-agent: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Stats {
            interface,
            mode,
            seconds,
        } => {
            let mut dp = DataPlane::load()?;
            dp.attach(&interface, mode.into())?;
            std::thread::sleep(Duration::from_secs(seconds));
            let s = dp.stats()?;
            println!("{interface}: XDP counters after {seconds} s");
            for (name, value) in s.fields() {
                println!("  {name:<14} {value}");
            }
            Ok(())
        }
    }
}
