//! carp-agent: the CARP failover agent, and the client of its control socket.

use anyhow::{Context as _, Result, bail};
use carp_agent::{
    agent,
    config::{self, Config, VhidConfig},
    control::{self, Forced, Request},
    preflight::{self, Options},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{io::Write as _, net::IpAddr, path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(
    version,
    about = "CARP failover agent with an XDP fast path",
    long_about = "CARP failover agent with an XDP fast path.\n\n\
        Without a command it runs the agent, from --config (default /etc/carp/carp.toml) or, \
        when -i is given, from ucarp's command line for a single VHID.",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long, global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Control socket of the running agent [default: the config file's, else
    /// /run/carp/agent.sock].
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9720 (overrides the file).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    ucarp: Ucarp,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The man page's FILES, SIGNALS, ENVIRONMENT (the agent's and its hooks') and EXIT STATUS,
/// also in `--help`.
const AFTER_HELP: &str = "\
Files:
  /etc/carp/carp.toml      configuration, see carp.toml(5); /etc/carp/carp.toml.example is
                           a commented example
  /run/carp/agent.sock     control socket of status, set-state, demote and reload
                           (/run/carp/NETNS.sock with [agent] netns = \"NETNS\")
  /sys/fs/bpf/carp/IFACE/  pinned maps for bpftool: CARP_VHIDS, CARP_VIPS, CARP_STATS, CARP_REPLAY,
                           CARP_PEERS, CARP_BALANCE; and CARP_KEYS (0600), the HMAC pad
                           states: password-equivalent, never paste a dump of it
                           (/sys/fs/bpf/carp/NETNS/IFACE/ with netns)

Signals:
  SIGHUP           re-read the configuration; VHIDs whose settings did not change keep their state
  SIGTERM, SIGINT  masters bow out (advbase 255) so backups take over at once; VIPs are removed

Environment:
  CARP_LOG                     log filter, e.g. debug or carp_agent::election=debug
  NOTIFY_SOCKET, WATCHDOG_USEC systemd's notify protocol and watchdog
  Hooks (up_script, down_script) are called as `HOOK <interface> <first vip>` with
  CARP_VHID, CARP_STATE, CARP_OLD_STATE, CARP_INTERFACE, CARP_VIPS and CARP_NETNS set

Exit status:
  0  stopped cleanly, or the command succeeded
  1  a runtime error (e.g. the XDP program could not be attached)
  2  mistakes in the configuration, one line each; nothing was applied (an interface or
     address that is not there yet is no mistake: its VHIDs wait in INIT for it)

Examples:
  carp-agent check                       validate /etc/carp/carp.toml (exit 2 on mistakes;
                                         warns of interfaces and addresses not there yet)
  carp-agent status                      every VHID in ifconfig's words (--json for scripts)
  carp-agent demote +150                 planned handover to a preempting backup
  carp-agent demote =0                   undo it
  carp-agent -c /etc/carp/b.toml status  the agent that runs /etc/carp/b.toml
  carp-agent -i eth0 -s 192.0.2.1 -v 1 -o /etc/carp/carp.pass -a 192.0.2.50   ucarp's flags

See also:
  carp.toml(5), /usr/share/doc/carp/README.md, bpftool(8), ucarp(8), keepalived(8)";

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// ucarp's options, so a ucarp user switches by changing the binary name.
#[derive(Args)]
struct Ucarp {
    /// ucarp: interface to bind to.
    #[arg(short = 'i', long)]
    interface: Option<String>,
    /// ucarp: source (real) IP address of this host.
    #[arg(short = 's', long)]
    srcip: Option<IpAddr>,
    /// ucarp: virtual host id (1-255).
    #[arg(short = 'v', long, default_value_t = 1)]
    vhid: u8,
    /// ucarp: password. Visible to anyone running `ps`; prefer --passfile.
    #[arg(short = 'p', long)]
    pass: Option<String>,
    /// ucarp: read the password from a file.
    #[arg(short = 'o', long)]
    passfile: Option<PathBuf>,
    /// ucarp: virtual shared IP address.
    #[arg(short = 'a', long)]
    addr: Option<String>,
    /// ucarp: advertisement frequency in seconds.
    #[arg(short = 'b', long, default_value_t = 1)]
    advbase: u8,
    /// ucarp: advertisement skew (0-254).
    #[arg(short = 'k', long, default_value_t = 0)]
    advskew: u8,
    /// ucarp: become master as soon as possible (preempt).
    #[arg(short = 'P', long)]
    preempt: bool,
    /// ucarp: run this script when becoming master.
    #[arg(short = 'u', long)]
    upscript: Option<PathBuf>,
    /// ucarp: run this script when leaving master.
    #[arg(short = 'd', long)]
    downscript: Option<PathBuf>,
    /// ucarp: run the down script at exit (carp-agent always does as master).
    #[arg(short = 'z', long)]
    shutdown: bool,
    /// ucarp: do not run the down script at start-up (carp-agent never does).
    #[arg(short = 'n', long)]
    neutral: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Show every VHID in ifconfig's words.
    Status {
        /// Print the status as JSON (fields: see the README, "Running it on a host").
        #[arg(long)]
        json: bool,
    },
    /// Force a VHID to MASTER or BACKUP (FreeBSD `ifconfig em0 vhid 1 state backup`).
    ///
    /// BACKUP stays quiet for one more advert interval than the master-down timer, so
    /// another backup takes over; with preempt the preferred host takes it back after that.
    /// For a planned handover use `demote`.
    SetState {
        /// The VHID (1-255).
        vhid: u8,
        /// The state to force.
        #[arg(value_enum)]
        state: StateArg,
        /// Only on this interface.
        #[arg(long)]
        interface: Option<String>,
    },
    /// Change demotion: +N, -N or =N (net.inet.carp.demotion), optionally of a group.
    ///
    /// Demotion is added to every advskew (CARP) or taken from every priority (VRRPv3):
    /// `+N` makes this host less preferred, so a preempting backup takes over within
    /// milliseconds once N exceeds the skew between them; `=0` undoes it.
    Demote {
        /// +N adds, -N subtracts, =N sets.
        #[arg(allow_hyphen_values = true)]
        change: String,
        /// Change this demotion group's counter (OpenBSD `ifconfig -g G carpdemote`)
        /// instead of the host's; it applies to the VHIDs listing G in `groups`.
        #[arg(long)]
        group: Option<String>,
    },
    /// Re-read the configuration file (as SIGHUP).
    Reload,
    /// Check the configuration and exit (2 when it is wrong; an interface or address that
    /// is not there yet is a warning).
    Check,
    /// Print a man page or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    Man,
    /// carp.toml(5), of the README's Configuration reference.
    ManConfig,
    Bash,
    Zsh,
    Fish,
}

/// Writes a man page or a completion script to stdout.
fn generate(what: Generated) -> Result<()> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let shell = match what {
        Generated::Man => {
            let man = clap_mangen::Man::new(cmd).section("8");
            let out = &mut std::io::stdout();
            man.render_title(out)?;
            man.render_name_section(out)?;
            man.render_synopsis_section(out)?;
            man.render_description_section(out)?;
            man.render_options_section(out)?;
            // The commands described here, not as pages of their own (none are installed).
            writeln!(out, ".SH COMMANDS")?;
            for sub in Cli::command()
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
            {
                let args: Vec<&clap::Arg> = sub.get_arguments().collect();
                let usage: Vec<String> = args
                    .iter()
                    .map(|a| {
                        let value = a.get_id().as_str().to_uppercase();
                        match a.get_long() {
                            Some(long) if a.get_action().takes_values() => {
                                format!("[--{long} {value}]")
                            }
                            Some(long) => format!("[--{long}]"),
                            None => format!("<{value}>"),
                        }
                    })
                    .collect();
                let about = sub.get_long_about().or(sub.get_about());
                writeln!(
                    out,
                    ".TP\n\\fBcarp-agent {}\\fR {}\n{}",
                    sub.get_name(),
                    usage.join(" "),
                    about.map(ToString::to_string).unwrap_or_default()
                )?;
                for (a, u) in args.iter().zip(&usage) {
                    let help = a.get_long_help().or(a.get_help());
                    let help = help.map(ToString::to_string).unwrap_or_default();
                    let values: Vec<String> = a
                        .get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_owned())
                        .collect();
                    let values = if values.is_empty() || !a.get_action().takes_values() {
                        String::new()
                    } else {
                        format!(" ({})", values.join(" | "))
                    };
                    writeln!(out, ".br\n{u}: {help}{values}")?;
                }
            }
            // AFTER_HELP's blocks as the sections a man page has: FILES, SIGNALS, ...
            for block in AFTER_HELP.split("\n\n") {
                let (head, body) = block.split_once('\n').unwrap_or((block, ""));
                let head = head.trim_end_matches(':').to_uppercase();
                writeln!(
                    out,
                    ".SH \"{head}\"\n.nf\n{}\n.fi",
                    body.replace('\\', "\\\\")
                )?;
            }
            man.render_version_section(out)?;
            return Ok(());
        }
        Generated::ManConfig => {
            print!("{}", config::manual::page(env!("CARGO_PKG_VERSION"))?);
            return Ok(());
        }
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "carp-agent", &mut std::io::stdout());
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    Master,
    Backup,
}

/// Exit code for configuration mistakes.
const EXIT_CONFIG: u8 = 2;

/// Sets up the agent's log, which takes the `log` crate's records too (tracing-subscriber's
/// `tracing-log` feature): the XDP program's, through aya-log, with target `carp::xdp`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CARP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: journald and log files would keep the escapes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // systemd sets JOURNAL_STREAM when stderr is the journal, which stamps lines itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

/// The single-VHID configuration ucarp's flags describe.
fn ucarp_config(u: &Ucarp, socket: PathBuf) -> Result<Config> {
    let interface = u.interface.clone().context("-i/--interface is required")?;
    let addr = u.addr.clone().context("-a/--addr is required")?;
    let mut v = VhidConfig::new(&interface, u.vhid, vec![addr]);
    v.advbase = u.advbase;
    v.advskew = u.advskew;
    v.preempt = u.preempt;
    v.src = u.srcip;
    v.up_script = u.upscript.clone();
    v.down_script = u.downscript.clone();
    // ucarp's addresses answer with the interface's own MAC.
    v.mac = config::MacMode::Interface;
    match (&u.pass, &u.passfile) {
        (Some(_), Some(_)) => bail!("give either -p or -o, not both"),
        (Some(pass), None) => {
            tracing::warn!("-p puts the password on the command line, visible to `ps`: use -o");
            // SAFETY: single-threaded here, before the runtime starts.
            unsafe { std::env::set_var("CARP_UCARP_PASS", pass) };
            v.pass_env = Some("CARP_UCARP_PASS".into());
        }
        (None, Some(file)) => v.pass_file = Some(file.clone()),
        (None, None) => {}
    }
    let mut c = Config::default();
    c.agent.socket = socket;
    c.vhids.push(v);
    Ok(c)
}

fn default_socket() -> PathBuf {
    config::DEFAULT_SOCKET.into()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Generate { what }) = cli.command {
        return match generate(what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("carp-agent: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(cli.log_format);
    // Options are settled before the runtime (and its threads) start.
    let options = match &cli.command {
        None | Some(Command::Run) | Some(Command::Check) => {
            let loaded = if cli.ucarp.interface.is_some() || cli.ucarp.addr.is_some() {
                ucarp_config(
                    &cli.ucarp,
                    cli.socket.clone().unwrap_or_else(default_socket),
                )
                .map(|config| Options { config, path: None })
            } else {
                Config::load(&cli.config)
                    .map_err(anyhow::Error::msg)
                    .map(|config| Options {
                        config,
                        path: Some(cli.config.clone()),
                    })
            };
            match loaded {
                Ok(mut o) => {
                    if cli.metrics.is_some() {
                        o.config.agent.metrics = cli.metrics;
                    }
                    if let Some(ns) = &o.config.agent.netns
                        && let Err(e) = carp_agent::netns::enter(ns)
                    {
                        eprintln!("carp-agent: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                    Some(o)
                }
                Err(e) => {
                    eprintln!("carp-agent: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        _ => None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carp-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match options {
            Some(options) => serve(options, matches!(cli.command, Some(Command::Check))).await,
            None => match client(cli).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("carp-agent: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn serve(options: Options, check_only: bool) -> ExitCode {
    let checked = match preflight::preflight(&options).await {
        Ok(c) => c,
        Err(mistakes) => {
            let at = options
                .path
                .as_ref()
                .map(|p| format!(" (in {})", p.display()))
                .unwrap_or_default();
            for m in mistakes {
                eprintln!("carp-agent: {m}{at}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        let checks = match options.config.checks.len() {
            0 => String::new(),
            1 => ", 1 health check".into(),
            n => format!(", {n} health checks"),
        };
        // What is not there yet is no mistake: the agent waits for it.
        for line in &checked.absent {
            eprintln!("carp-agent: warning: {line}");
        }
        println!(
            "configuration OK: {}{checks}",
            preflight::vhids(checked.plans.len())
        );
        return ExitCode::SUCCESS;
    }
    // Before the first strict advert; a file that holds no count is a mistake to fix.
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sequence = match carp_agent::state::start(&options.config.agent.state_dir, unix_secs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("carp-agent: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!("boot count {}", sequence.boot());
    match agent::run(options, checked.plans, sequence).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client(cli: Cli) -> Result<()> {
    let json = matches!(cli.command, Some(Command::Status { json: true }));
    let request = match cli.command {
        Some(Command::Status { .. }) => Request::Status,
        Some(Command::SetState {
            vhid,
            state,
            interface,
        }) => Request::SetState {
            vhid,
            interface,
            state: match state {
                StateArg::Master => Forced::Master,
                StateArg::Backup => Forced::Backup,
            },
        },
        Some(Command::Demote {
            ref change,
            ref group,
        }) => Request::Demote {
            change: change.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            group: group.clone(),
        },
        Some(Command::Reload) => Request::Reload,
        None | Some(Command::Run) | Some(Command::Check) | Some(Command::Generate { .. }) => {
            unreachable!("handled before the client")
        }
    };
    // The socket of the agent that runs this config file, so `-c FILE status` finds it.
    let socket = match cli.socket {
        Some(s) => s,
        None => Config::socket_of(&cli.config)
            .map_err(|e| anyhow::anyhow!("{e} (--socket reaches the agent regardless)"))?
            .unwrap_or_else(default_socket),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("carp-agent {}", args.join(" "));
    let reply = control::request(&socket, &request, &command).await?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_default());
    }
    if let Some(status) = reply.status {
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", status.text());
        }
    }
    Ok(())
}
