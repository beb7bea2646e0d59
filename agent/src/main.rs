use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hbwatch::live::{self, AttachMode, LiveOptions};
use hbwatch::offline::AnalyzeOptions;
use hbwatch::output::{FormatArg, LineSink, Sink as _};
use hbwatch::ports::{default_specs, port_table, PortSpec};
use hbwatch::sink::{Fanout, LossTracker, SinkContext, SinkSpec};
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
        #[command(flatten)]
        summary: SummaryArgs,
        #[command(flatten)]
        outputs: OutputArgs,
    },
    /// Preflight: kernel, privileges, verifier, interfaces and XDP modes, with what to do.
    Check(CheckArgs),
    /// Analyze pcap/pcapng captures offline with the same engine; NDJSON to stdout.
    Analyze {
        /// Capture files (pcap or pcapng, micro- or nanosecond); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Extra ports for a protocol, e.g. `cs1000-rudp=15000,15100-15110` (repeatable).
        #[arg(long = "port")]
        ports: Vec<PortSpec>,
        /// Per-protocol tuning, as for `run` (repeatable).
        #[arg(long = "tune", value_name = "PROTOCOL.KEY=VALUE")]
        tunes: Vec<Tune>,
        /// `observer.hostname` in events (default: this host's name).
        #[arg(long)]
        hostname: Option<String>,
        /// Print a per-association table to stderr at the end (heartbeats, lost, RTT,
        /// outages, diagnosis).
        #[arg(long)]
        summary: bool,
        #[command(flatten)]
        periodic: SummaryArgs,
        #[command(flatten)]
        outputs: OutputArgs,
    },
    /// See it work in one command (root): a namespace and veth pair, the agent with real
    /// XDP, a scripted ~60 s incident story, then the capture analyzed offline and compared.
    Demo {
        /// Built-in scenario (story, faults, healthy) or a TOML scenario file.
        #[arg(long, default_value = "story")]
        scenario: String,
        /// Where the traffic is written as a pcap.
        #[arg(long, default_value = "hbwatch-demo.pcap")]
        pcap: PathBuf,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
    },
    /// Generate realistic heartbeat traffic with scripted faults, to a capture file (with
    /// its ground truth) or onto an interface in real time.
    Hbgen(hbwatch::hbgen::cli::HbgenArgs),
}

/// Preflight checks.
#[derive(clap::Args, Debug, Clone)]
struct CheckArgs {
    /// Interfaces to check (XDP modes, other programs attached).
    #[arg(long = "iface", short = 'i')]
    interfaces: Vec<String>,
}

/// Where events go.
#[derive(clap::Args, Debug, Clone)]
struct OutputArgs {
    /// Where events go (repeatable; default stdout): `stdout`, `file:PATH`,
    /// `loki+http://HOST:3100`, `syslog+udp://HOST:514`, `syslog+tcp://`, `syslog+tls://`.
    /// Options follow as a query, e.g. `file:/var/log/hbwatch.ndjson?max_size=100MiB&keep=5`
    /// (docs/OPERATIONS.md lists them).
    #[arg(long = "output", short = 'o', value_name = "URL")]
    outputs: Vec<SinkSpec>,
    /// Format of `stdout`.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// On exit, how long to wait for outputs to deliver what they hold (Loki keeps the
    /// rest in its spool for the next start; other outputs count it as lost).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    flush_timeout: Duration,
}

impl OutputArgs {
    fn open(&self, hostname: &str) -> anyhow::Result<Fanout> {
        let ctx = SinkContext::new(hostname.to_string(), self.format.resolve());
        Fanout::open(&self.outputs, &ctx)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    hbwatch::sink::parse_duration(s)
}

/// Delivers what the outputs hold, then says (and exits non-zero) if anything was lost.
fn close_outputs(out: &mut Fanout, timeout: Duration) -> anyhow::Result<()> {
    out.close(timeout)?;
    let lost: Vec<String> = out
        .each_stats()
        .into_iter()
        .filter(|(_, st)| st.dropped > 0)
        .map(|(name, st)| format!("{name}: {} events lost", st.dropped))
        .collect();
    if !lost.is_empty() {
        eprintln!(
            "hbwatch: not every event was delivered: {}",
            lost.join("; ")
        );
        std::process::exit(3);
    }
    Ok(())
}

/// `heartbeat.summary` metric events.
#[derive(clap::Args, Debug, Clone)]
struct SummaryArgs {
    /// Period of `heartbeat.summary` events per association, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    summary_period: u64,
    /// No `heartbeat.summary` events.
    #[arg(long)]
    no_summary_events: bool,
}

impl SummaryArgs {
    fn period(&self) -> Option<Duration> {
        (!self.no_summary_events && self.summary_period > 0)
            .then(|| Duration::from_secs(self.summary_period))
    }
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
            summary,
            outputs,
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
                summary_period: summary.period(),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = outputs.open(&opts.hostname)?;
            let result = rt.block_on(live::run(opts, &mut out));
            close_outputs(&mut out, outputs.flush_timeout)?;
            result
        }
        Command::Check(args) => {
            let findings = hbwatch::check::run(&args.interfaces);
            for f in &findings {
                println!("{f}");
            }
            let failed = findings
                .iter()
                .filter(|f| f.status == hbwatch::check::Status::Fail)
                .count();
            if failed > 0 {
                eprintln!("{failed} check(s) failed");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Analyze {
            files,
            ports,
            tunes,
            hostname,
            summary,
            periodic,
            outputs,
        } => {
            let mut specs = default_specs();
            specs.extend(ports);
            let opts = AnalyzeOptions {
                files,
                ports: port_table(&specs),
                params: hbwatch::tuning::params(&tunes),
                hostname: hostname.unwrap_or_else(live::hostname),
                summary_period: periodic.period(),
                summary_table: summary,
                progress: true,
            };
            let mut out = outputs.open(&opts.hostname)?;
            let result = hbwatch::offline::analyze(&opts, &mut out);
            let lost = LossTracker::default().check(
                &out,
                &hbwatch::event::Observer {
                    hostname: opts.hostname.clone(),
                    ingress: None,
                },
                hbwatch::clock::WallClock::now_unix_ns(),
            );
            hbwatch::live::write_events(&mut out, &lost)?;
            close_outputs(&mut out, outputs.flush_timeout)?;
            result.map(|_| ())
        }
        Command::Hbgen(args) => hbwatch::hbgen::cli::run(args),
        Command::Demo {
            scenario,
            pcap,
            format,
        } => {
            let stdout = std::io::stdout();
            let mut out = LineSink::new(stdout.lock(), format.resolve());
            let opts = hbwatch::demo::DemoOptions {
                scenario,
                pcap,
                format: format.resolve(),
            };
            if !hbwatch::demo::run(&opts, &mut out)? {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}
