use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use hbwatch::config::{Overrides, Reload, Settings, SipUsers};
use hbwatch::datapath::AttachMode;
use hbwatch::live::{self, LiveOptions};
use hbwatch::offline::AnalyzeOptions;
use hbwatch::ports::PortSpec;
use hbwatch::sink::stdout::{FormatArg, LineSink};
use hbwatch::sink::{Fanout, LossTracker, SinkContext, SinkSpec};
use hbwatch::sink::{Filtered, Sink as _};
use hbwatch::tuning::Tune;
use tracing_subscriber::EnvFilter;

/// musl's allocator is slow (agent/Cargo.toml); the glibc build keeps glibc's.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Watches telephony heartbeats (GED-125, SCCP, MDS, CS1000 RUDP, SIP) in the kernel
/// and reports what goes wrong as NDJSON events.
#[derive(Parser)]
#[command(name = "hbwatch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces and report heartbeat events live (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON).
    Run {
        /// Interface to watch (repeatable; replaces the config's `agent.interfaces`).
        #[arg(long = "iface", short = 'i')]
        interfaces: Vec<String>,
        /// Extra ports for a protocol, e.g. `cs1000-rudp=15000,15100-15110` (repeatable).
        #[arg(long = "port")]
        ports: Vec<PortSpec>,
        /// Per-protocol tuning loaded into the kernel, e.g. `mds.max_gap=50`,
        /// `cs1000-rudp.expected_dscp=any` (repeatable). Keys: interval_ms, max_gap,
        /// reorder_window, tolerance_pct, down_after, expected_dscp, confirm_beats.
        #[arg(long = "tune", value_name = "PROTOCOL.KEY=VALUE")]
        tunes: Vec<Tune>,
        /// Ingress attach mode: XDP auto|driver|skb, or tc (the clsact ingress hook; cheapest
        /// on veth and virtual interfaces) [default: auto].
        #[arg(long, value_enum)]
        mode: Option<AttachMode>,
        /// Also watch egress (TC) on each interface: heartbeats this host sends itself.
        #[arg(long)]
        egress: bool,
        /// Associations the kernel flow table holds (replaces `agent.max_associations`;
        /// default: sized by this host's memory).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(hbwatch::datapath::MIN_FLOWS as i64..=hbwatch::datapath::MAX_FLOWS as i64))]
        max_associations: Option<u32>,
        /// `observer.hostname` in events (default: this host's name).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        summary: SummaryArgs,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        common: CommonArgs,
        /// Serve Prometheus metrics at http://ADDR/metrics: a port alone binds
        /// 127.0.0.1 (config `metrics.listen`; off by default).
        #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Serve status snapshots for `hbwatch top` on this unix socket (mode 0660).
        /// Default: `hbwatch.sock` in `$RUNTIME_DIRECTORY` or `/run/hbwatch`
        /// when running as root or under systemd; `none` turns it off.
        #[arg(long, value_name = "PATH")]
        status_socket: Option<std::path::PathBuf>,
        /// Show the live status board on this terminal (as `hbwatch top`) instead of
        /// event lines on stdout; other outputs still get every event. `q` stops.
        #[arg(long)]
        tui: bool,
        /// Flight recorder: keep the last minutes of heartbeats as rotating pcapng files in
        /// DIR for `hbwatch locate`, e.g. `/var/lib/hbwatch/record?keep=15m&max_size=256MiB`
        /// (replaces `agent.record`).
        #[arg(long, value_name = "DIR?keep=15m")]
        record: Option<hbwatch::locate::recorder::RecordSpec>,
    },
    /// Live status board of every association of a running `hbwatch run`.
    Top {
        /// The agent's status socket [default: as `hbwatch run`'s].
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// Preflight: kernel, privileges, verifier, interfaces and XDP modes, with what to do.
    Check(CheckArgs),
    /// Analyze pcap/pcapng captures offline with the same engine; NDJSON to stdout.
    #[command(after_help = "Exit status: 0 every capture was read whole; \
        4 a capture was cut short (e.g. copied while still being written) or corrupt further on: \
        a warning names the file and frame, everything before it was analyzed, the other files too, \
        and every event and the summary were delivered; \
        1 a capture could not be read at all (the others are still analyzed) or another error; \
        3 an output did not deliver every event.")]
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
        /// Write a self-contained HTML incident report here: a timeline per association
        /// (heartbeats, alerts, outages), the outages' diagnosis, the summary table.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// Hold routine heartbeats in the flow table as the live datapath does, instead
        /// of a record each: the same events (for the tests and benchmarks that show it).
        #[arg(long, hide = true)]
        hold_routine_beats: bool,
        /// Read a file ahead (warming the caches for the frames to come) once this many
        /// flows are known: for the tests that show it changes no event (0: at once).
        #[arg(long, hide = true, value_name = "FLOWS", default_value_t = hbwatch::offline::READ_AHEAD_FROM)]
        read_ahead_from: usize,
        #[command(flatten)]
        periodic: SummaryArgs,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The configuration file: print the defaults, or check a file.
    Config {
        /// Print a configuration file with every option at its default.
        #[arg(long, conflicts_with = "check")]
        print_default: bool,
        /// Check FILE and print the effective settings (exit status 1 and the reason if
        /// it is not valid).
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
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
        /// Event lines on the terminal instead of the live status board.
        #[arg(long)]
        no_board: bool,
    },
    /// Generate realistic heartbeat traffic with scripted faults, to a capture file (with
    /// its ground truth) or onto an interface in real time.
    Hbgen(hbgen::cli::HbgenArgs),
    /// The heartbeat protocols this version knows: transports, default ports, default
    /// tuning (each overridable with --port and --tune).
    Protocols {
        /// A markdown table (docs/PROTOCOLS.md is made with it).
        #[arg(long)]
        markdown: bool,
    },
    /// Two vantage captures made from one (loss, re-marking, TTL change, forged RST, clock
    /// offset, jitter between them) with the truth as JSON: test data for `locate`.
    Vantage {
        /// The capture to start from (pcap or pcapng).
        input: PathBuf,
        /// The spec (TOML): docs/OPERATIONS.md, "Where is the loss?".
        #[arg(long)]
        spec: PathBuf,
        /// Where to write vantage `a`'s capture (pcapng).
        #[arg(long)]
        out_a: PathBuf,
        /// Where to write vantage `b`'s capture (pcapng).
        #[arg(long)]
        out_b: PathBuf,
        /// Where to write the truth [default: `<out-b>.truth.json`].
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Extra ports for a protocol, as for `analyze` (repeatable).
        #[arg(long = "port")]
        ports: Vec<PortSpec>,
    },
    /// Where is the loss? Captures of the same heartbeats at several points of a path,
    /// lined up by the heartbeats' own numbers: path.* events as NDJSON on stdout.
    #[command(after_help = "Exit status: 0 every capture was read whole; \
        4 a capture was cut short or corrupt further on (everything before it was used); \
        1 a capture could not be read at all, or another error. \
        docs/OPERATIONS.md, \"Where is the loss?\", has the workflow.")]
    Locate {
        /// Vantage points: NAME=FILE (pcap or pcapng), two or more, in any order.
        #[arg(required = true, value_parser = hbwatch::locate::parse_point, value_name = "NAME=FILE")]
        points: Vec<(String, PathBuf)>,
        /// Extra ports for a protocol, as for `analyze` (repeatable).
        #[arg(long = "port")]
        ports: Vec<PortSpec>,
        /// `observer.hostname` in events [default: this host's name].
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Print the index template for hbwatch's events (every field of docs/EVENTS.md with
    /// its ECS type): `PUT _index_template/hbwatch` with it, for `hbwatch-*` indices.
    Schema {
        /// Search engine the template is for (OpenSearch has no match_only_text).
        #[arg(long, value_enum, default_value_t = hbwatch::schema::Engine::Elasticsearch)]
        engine: hbwatch::schema::Engine,
        /// Print the field list as a Markdown table instead (docs/EVENTS.md's).
        #[arg(long, conflicts_with = "engine")]
        markdown: bool,
    },
}

/// A hidden subcommand, outside `Cli` so that neither the man pages nor the completions
/// (clap_complete lists hidden subcommands too) show it: writes the man pages and
/// completions of `cli()` into DIR/man1 and DIR/completions for `cargo xtask dist`.
const GENERATE_DOCS: &str = "generate-docs";

/// The CLI with its `--version` text: `-V` one line, `--version` every build fact.
fn cli() -> clap::Command {
    let build = BuildInfo::get();
    Cli::command()
        .version(build.short())
        .long_version(build.long())
}

/// What tells two builds apart. `cargo xtask dist` sets HBWATCH_GIT_COMMIT and
/// HBWATCH_BUILD_DATE; other builds say "unknown". The target comes from the compiler's
/// cfg and the eBPF hash from the object actually embedded, so neither can be stale.
struct BuildInfo {
    commit: &'static str,
    date: &'static str,
    target: String,
    ebpf_sha256: String,
}

impl BuildInfo {
    fn get() -> BuildInfo {
        use sha2::Digest as _;
        let env = if cfg!(target_env = "musl") {
            "musl"
        } else if cfg!(target_env = "gnu") {
            "gnu"
        } else {
            "unknown-libc"
        };
        let linkage = if cfg!(target_feature = "crt-static") {
            "static"
        } else {
            "dynamic"
        };
        BuildInfo {
            commit: option_env!("HBWATCH_GIT_COMMIT").unwrap_or("unknown"),
            date: option_env!("HBWATCH_BUILD_DATE").unwrap_or("unknown"),
            target: format!(
                "{}-{}-{env} ({linkage})",
                std::env::consts::ARCH,
                std::env::consts::OS
            ),
            ebpf_sha256: format!("{:x}", sha2::Sha256::digest(hbwatch::EBPF_OBJECT)),
        }
    }

    fn short(&self) -> &'static str {
        leak(format!(
            "{} (commit {}, built {})",
            env!("CARGO_PKG_VERSION"),
            self.commit,
            self.date
        ))
    }

    fn long(&self) -> &'static str {
        leak(format!(
            "{}\ncommit:      {}\nbuild date:  {}\ntarget:      {}\nprofile:     {}\neBPF object: sha256:{} ({} bytes)",
            env!("CARGO_PKG_VERSION"),
            self.commit,
            self.date,
            self.target,
            // A debug build does ~10x the CPU per record: say so in every bug report.
            if cfg!(debug_assertions) { "debug" } else { "release" },
            self.ebpf_sha256,
            hbwatch::EBPF_OBJECT.len()
        ))
    }
}

/// clap keeps version texts as `&'static str`; built once per run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `hbwatch generate-docs DIR`: one man page per subcommand under DIR/man1, the bash, zsh
/// and fish completions under DIR/completions.
fn generate_docs(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap_complete::Shell;
    let man_dir = dir.join("man1");
    let completions = dir.join("completions");
    for d in [&man_dir, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("could not create {}", d.display()))?;
    }
    let mut cmd = cli().disable_help_subcommand(true);
    cmd.build();
    let source = format!("hbwatch {}", env!("CARGO_PKG_VERSION"));
    let date = option_env!("HBWATCH_BUILD_DATE").unwrap_or("");
    write_man_pages(&cmd, &man_dir, &source, date)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "hbwatch", &completions)
            .with_context(|| format!("could not write the {shell} completion"))?;
    }
    Ok(())
}

/// One page per visible (sub)command: hbwatch.1, hbwatch-run.1, ...
fn write_man_pages(
    cmd: &clap::Command,
    dir: &std::path::Path,
    source: &str,
    date: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub, dir, source, date)?;
    }
    clap_mangen::Man::new(cmd.clone())
        .source(source)
        .date(date)
        .manual("hbwatch manual")
        .generate_to(dir)
        .with_context(|| format!("could not write the man page of {}", cmd.get_name()))?;
    Ok(())
}

/// Preflight checks.
#[derive(clap::Args, Debug, Clone)]
struct CheckArgs {
    /// Interfaces to check (XDP modes, other programs attached).
    #[arg(long = "iface", short = 'i')]
    interfaces: Vec<String>,
}

/// Options `run` and `analyze` share.
#[derive(clap::Args, Debug, Clone)]
struct CommonArgs {
    /// Configuration file (TOML; `hbwatch config --print-default` shows every option).
    /// Flags given here override it.
    #[arg(long, env = "HBWATCH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// SIP user parts (phone numbers, names) in events: keep, hash (keyed by
    /// `privacy.hash_key` or $HBWATCH_HASH_KEY) or redact [default: keep].
    #[arg(long, value_enum)]
    sip_users: Option<SipUsers>,
}

impl CommonArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        if let Some(u) = self.sip_users {
            s.privacy.sip_users = u;
        }
        if let Ok(key) = std::env::var("HBWATCH_HASH_KEY") {
            s.privacy.hash_key = key;
        }
        if s.privacy.sip_users == SipUsers::Hash && s.privacy.hash_key.len() < 16 {
            anyhow::bail!(
                "--sip-users hash needs a key of 16 characters or more: set privacy.hash_key in the config or $HBWATCH_HASH_KEY"
            );
        }
        Ok(s)
    }
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    hbwatch::config::parse_listen(s)
}

/// Where events go.
#[derive(clap::Args, Debug, Clone)]
struct OutputArgs {
    /// Where events go (repeatable; default stdout): `stdout`, `file:PATH`,
    /// `loki+http://HOST:3100`, `otlp+http://HOST:4318`, `syslog+udp://HOST:514`,
    /// `syslog+tcp://`, `syslog+tls://` (and `+https` for Loki and OTLP).
    /// Options follow as a query, e.g. `file:/var/log/hbwatch.ndjson?max_size=100MiB&keep=5`
    /// (docs/OPERATIONS.md lists them).
    #[arg(long = "output", short = 'o', value_name = "URL")]
    outputs: Vec<SinkSpec>,
    /// Format of `stdout`.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// On exit, how long to wait for outputs to deliver what they hold (Loki and OTLP keep
    /// the rest in their spool for the next start; other outputs count it as lost)
    /// [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    flush_timeout: Option<Duration>,
}

impl OutputArgs {
    /// The outputs: these flags, else the config's, else stdout.
    fn open(&self, hostname: &str, settings: &Settings) -> anyhow::Result<Fanout> {
        Fanout::open(self.specs(settings), &self.context(hostname, settings))
    }

    /// The outputs beside a board on this terminal (`run --tui`): all but stdout, which
    /// the board owns (none at all is fine: the board shows the events).
    fn open_beside_board(&self, hostname: &str, settings: &Settings) -> anyhow::Result<Fanout> {
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!("--tui needs a terminal on stdout");
        }
        let specs: Vec<SinkSpec> = self
            .specs(settings)
            .iter()
            .filter(|s| !matches!(s, SinkSpec::Stdout))
            .cloned()
            .collect();
        if specs.is_empty() {
            return Ok(Fanout::new(Vec::new()));
        }
        Fanout::open(&specs, &self.context(hostname, settings))
    }

    fn specs<'a>(&'a self, settings: &'a Settings) -> &'a [SinkSpec] {
        if self.outputs.is_empty() {
            &settings.outputs
        } else {
            &self.outputs
        }
    }

    fn context(&self, hostname: &str, settings: &Settings) -> SinkContext {
        let mut ctx = SinkContext::new(hostname.to_string(), self.format.resolve());
        ctx.labels = settings.labels.clone();
        ctx
    }

    fn flush_timeout(&self, settings: &Settings) -> Duration {
        self.flush_timeout
            .or(settings.flush_timeout)
            .unwrap_or(Duration::from_secs(10))
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
    /// Period of `heartbeat.summary` events per association, seconds [default: 60].
    #[arg(long, value_name = "SECONDS")]
    summary_period: Option<u64>,
    /// No `heartbeat.summary` events.
    #[arg(long)]
    no_summary_events: bool,
}

impl SummaryArgs {
    /// What the flags say, if they say anything (`Some(None)`: off).
    fn overrides(&self) -> Option<Option<Duration>> {
        if self.no_summary_events {
            return Some(None);
        }
        self.summary_period
            .map(|s| (s > 0).then(|| Duration::from_secs(s)))
    }
}

/// Errors end as one clear line on stderr and exit status 1 (no backtrace: they are
/// the user's to fix, not bugs).
fn main() {
    if let Err(e) = real_main() {
        eprintln!("hbwatch: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(hbwatch::top::app::log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let matches = cli()
        .subcommand(
            clap::Command::new(GENERATE_DOCS)
                .hide(true)
                .arg(clap::arg!(<DIR>).value_parser(clap::value_parser!(PathBuf))),
        )
        .get_matches();
    if let Some(m) = matches.subcommand_matches(GENERATE_DOCS) {
        let dir = m.get_one::<PathBuf>("DIR").expect("DIR is required");
        return generate_docs(dir);
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run {
            interfaces,
            ports,
            tunes,
            mode,
            egress,
            max_associations,
            hostname,
            summary,
            outputs,
            common,
            metrics_listen,
            status_socket,
            tui,
            record,
        } => {
            let settings = common.settings()?;
            let overrides = Overrides {
                ports,
                tunes,
                summary_period: summary.overrides(),
            };
            let eff = overrides.apply(&settings.tunables);
            let interfaces = if interfaces.is_empty() {
                settings.interfaces.clone()
            } else {
                interfaces
            };
            if interfaces.is_empty() {
                anyhow::bail!(
                    "no interface to watch: give --iface IF, or agent.interfaces in the config file"
                );
            }
            let mode = mode.or(settings.mode).unwrap_or(AttachMode::Auto);
            let digest =
                hbwatch::config_digest(&format!("{:?}{:?}{mode:?}", eff.ports, eff.params));
            let opts = LiveOptions {
                interfaces,
                mode,
                egress: egress || settings.egress.unwrap_or(false),
                max_associations: max_associations
                    .or(settings.max_associations)
                    .unwrap_or_else(hbwatch::datapath::default_max_associations),
                ports: eff.ports,
                params: eff.params,
                hostname: hostname
                    .or(settings.hostname.clone())
                    .unwrap_or_else(live::hostname),
                poll: Duration::from_secs(1),
                config_digest: digest,
                summary_period: eff.summary_period,
                sip: settings.sip.clone(),
                metrics_listen: metrics_listen.or(settings.metrics_listen),
                metrics_web: settings.metrics_web.clone(),
                reload: settings.path.clone().map(|path| Reload { path, overrides }),
                drop_privileges: true,
                status: None,
                privacy: settings.privacy.clone(),
                record: record.or(settings.record.clone()).map(|mut r| {
                    r.sip_messages = settings.privacy.sip_users == SipUsers::Keep;
                    if !r.sip_messages {
                        tracing::warn!(
                            "--record: SIP messages are not recorded (privacy.sip_users hides users; a recording would hold them in clear)"
                        );
                    }
                    r
                }),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = if tui {
                outputs.open_beside_board(&opts.hostname, &settings)?
            } else {
                outputs.open(&opts.hostname, &settings)?
            };
            let mut board = None;
            let result = rt.block_on(async {
                let mut opts = opts;
                opts.status = hbwatch::top::status::start(status_socket)?;
                if tui {
                    let publisher = opts.status.get_or_insert_with(|| {
                        hbwatch::top::status::Publisher::new(hbwatch::top::status::shared())
                    });
                    publisher.draw_here();
                    board = Some(hbwatch::top::app::attach(
                        publisher.shared.clone(),
                        hbwatch::top::app::interrupt_self,
                    ));
                }
                live::run(opts, &mut out).await
            });
            if let Some(b) = board {
                b.finish()?;
            }
            close_outputs(&mut out, outputs.flush_timeout(&settings))?;
            result
        }
        Command::Config {
            print_default,
            check,
        } => {
            if let Some(path) = check {
                let s = Settings::load(&path)?;
                let eff = Overrides::default().apply(&s.tunables);
                println!("{}: valid", path.display());
                println!("interfaces: {:?}", s.interfaces);
                println!("outputs: {:?}", s.outputs);
                println!("metrics: {:?}", s.metrics_listen);
                s.metrics_web.check()?;
                println!(
                    "metrics tls: {}, basic auth user: {:?}",
                    s.metrics_web.tls_cert.is_some(),
                    s.metrics_web.basic_auth_user
                );
                println!("summary period: {:?}", eff.summary_period);
                println!("sip expiry grace: {} ms", s.sip.expiry_grace_ms);
                for (proto, p) in &eff.params {
                    println!("{}: {p:?}", proto.name());
                }
                return Ok(());
            }
            if !print_default {
                anyhow::bail!("nothing to do: give --print-default or --check FILE");
            }
            print!("{}", hbwatch::config::default_toml());
            Ok(())
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
            report,
            hold_routine_beats,
            read_ahead_from,
            periodic,
            outputs,
            common,
        } => {
            let settings = common.settings()?;
            let eff = Overrides {
                ports,
                tunes,
                summary_period: periodic.overrides(),
            }
            .apply(&settings.tunables);
            let opts = AnalyzeOptions {
                files,
                ports: eff.ports,
                params: eff.params,
                hostname: hostname
                    .or(settings.hostname.clone())
                    .unwrap_or_else(live::hostname),
                summary_period: eff.summary_period,
                summary_table: summary,
                progress: true,
                sip: settings.sip.clone(),
                timeline: report.is_some(),
                hold: hold_routine_beats,
                read_ahead_from,
                totals: summary || report.is_some(),
            };
            let mut out = outputs.open(&opts.hostname, &settings)?;
            // The report sees the events as delivered (after the privacy filter).
            let mut kept = hbwatch::report::Collector::new(report.is_some());
            let result = hbwatch::offline::analyze(
                &opts,
                &mut Filtered::new(&mut kept.tee(&mut out), settings.privacy.clone()),
            );
            let lost = LossTracker::default().check(
                &out,
                &hbwatch::event::Observer {
                    hostname: opts.hostname.clone(),
                    ingress: None,
                },
                hbwatch::clock::WallClock::now_unix_ns(),
            );
            hbwatch::live::write_events(&mut out, &lost)?;
            close_outputs(&mut out, outputs.flush_timeout(&settings))?;
            let reports = result?;
            if let Some(path) = &report {
                let run = hbwatch::report::RunInfo {
                    paths: opts.files.clone(),
                    hostname: opts.hostname.clone(),
                };
                hbwatch::report::write(path, &reports, &kept, &run)?;
            }
            let status = hbwatch::offline::exit_status(&reports);
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
        Command::Hbgen(args) => hbgen::cli::run(args),
        Command::Protocols { markdown } => {
            print!("{}", hbwatch::ports::protocol_table(markdown));
            Ok(())
        }
        Command::Vantage {
            input,
            spec,
            out_a,
            out_b,
            truth,
            ports,
        } => {
            let ports = hbwatch::ports::defaults_and(ports);
            hbwatch::locate::vantage::run(&input, &spec, &ports, &out_a, &out_b, truth)
        }
        Command::Locate {
            points,
            ports,
            hostname,
        } => {
            let opts = hbwatch::locate::LocateOptions {
                points,
                ports: hbwatch::ports::defaults_and(ports),
                hostname: hostname.unwrap_or_else(live::hostname),
            };
            let status = hbwatch::locate::run(&opts, &mut std::io::stdout().lock())?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
        Command::Schema { markdown: true, .. } => {
            print!("{}", hbwatch::schema::markdown());
            Ok(())
        }
        Command::Schema { engine, .. } => {
            let template = hbwatch::schema::index_template(engine);
            println!("{}", serde_json::to_string_pretty(&template)?);
            Ok(())
        }
        Command::Top { socket } => {
            hbwatch::top::app::run(&socket.unwrap_or_else(hbwatch::top::status::default_socket))
        }
        Command::Demo {
            scenario,
            pcap,
            format,
            no_board,
        } => {
            let opts = hbwatch::demo::DemoOptions {
                scenario,
                pcap,
                format: format.resolve(),
                board: !no_board
                    && format == FormatArg::Auto
                    && std::io::IsTerminal::is_terminal(&std::io::stdout()),
            };
            // The board draws on stdout itself: no event lines (and no lock held) then.
            let mut out: Box<dyn hbwatch::sink::Sink> = if opts.board {
                Box::new(hbwatch::sink::Fanout::new(Vec::new()))
            } else {
                Box::new(LineSink::new(std::io::stdout().lock(), format.resolve()))
            };
            if !hbwatch::demo::run(&opts, &mut *out)? {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}
