use std::time::Duration;

use clap::{Parser, Subcommand};
use hbwatch::live::{self, AttachMode, LiveOptions};
use hbwatch::ports::{default_specs, port_table, PortSpec};
use hbwatch::tuning::Tune;
use tracing_subscriber::EnvFilter;

/// Watches telephony heartbeats (GED-125, SCCP, MDS, CS1000 RUDP, SIP) in the kernel
/// and reports what goes wrong as NDJSON events.
#[derive(Parser)]
#[command(name = "hbwatch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces and report heartbeat events live (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON).
    Run {
        /// Interface to watch (repeatable).
        #[arg(long = "iface", short = 'i', required = true)]
        interfaces: Vec<String>,
        /// Extra ports for a protocol, e.g. `cs1000-rudp=15000,15100-15110` (repeatable).
        #[arg(long = "port")]
        ports: Vec<PortSpec>,
        /// Per-protocol tuning loaded into the kernel, e.g. `mds.max_gap=50`,
        /// `cs1000-rudp.expected_dscp=any` (repeatable). Keys: interval_ms, max_gap,
        /// reorder_window, tolerance_pct, down_after, expected_dscp.
        #[arg(long = "tune", value_name = "PROTOCOL.KEY=VALUE")]
        tunes: Vec<Tune>,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        mode: AttachMode,
        /// Also watch egress (TC) on each interface: heartbeats this host sends itself.
        #[arg(long)]
        egress: bool,
        /// `observer.hostname` in events (default: this host's name).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Generate realistic heartbeat traffic with scripted faults, to a capture file (with
    /// its ground truth) or onto an interface in real time.
    Hbgen(hbwatch::hbgen::cli::HbgenArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            interfaces,
            ports,
            tunes,
            mode,
            egress,
            hostname,
        } => {
            let mut specs = default_specs();
            specs.extend(ports);
            let params = hbwatch::tuning::params(&tunes);
            let ports = port_table(&specs);
            let digest = hbwatch::config_digest(&format!("{specs:?}{params:?}{mode:?}"));
            let opts = LiveOptions {
                interfaces,
                mode,
                egress,
                ports,
                params,
                hostname: hostname.unwrap_or_else(live::hostname),
                poll: Duration::from_secs(1),
                config_digest: digest,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            rt.block_on(live::run(opts, &mut out))
        }
        Command::Hbgen(args) => hbwatch::hbgen::cli::run(args),
    }
}
