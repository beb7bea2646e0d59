//! `hbwatch hbgen`: generate a scenario to a capture file or onto an interface.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::crowd::{self, Crowd};
use super::noise;
use super::ordinary::{self, OrdinaryOptions};
use super::output;
use super::scenario::{Overrides, Scenario, BUILTIN};
use super::TimedFrame;
use hbwatch_pcap::Format;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("out").required(true).args(["pcap", "iface", "show"])))]
pub struct HbgenArgs {
    /// A built-in scenario (healthy, faults, story, mgcp; quiet: ordinary traffic on the
    /// heartbeat ports only, hbgen/src/noise.rs; crowd: --associations RUDP associations,
    /// one silenced and one restarted, hbgen/src/crowd.rs) or a TOML scenario file.
    #[arg(long)]
    pub scenario: String,
    /// With --scenario crowd: how many associations (device pairs: an even number;
    /// default 100000).
    #[arg(long)]
    pub associations: Option<u64>,
    /// Write a capture here (pcap; --pcapng for pcapng), with `<file>.truth.json` beside it.
    #[arg(long, conflicts_with = "iface")]
    pub pcap: Option<PathBuf>,
    /// Send the frames out of this interface in real time (AF_PACKET; needs CAP_NET_RAW).
    #[arg(long)]
    pub iface: Option<String>,
    /// Write pcapng instead of pcap (timestamps in ns).
    #[arg(long, requires = "pcap")]
    pub pcapng: bool,
    /// pcap with nanosecond timestamps (default: microseconds).
    #[arg(long, requires = "pcap", conflicts_with = "pcapng")]
    pub nanos: bool,
    /// Seconds of traffic (overrides the scenario's duration_s).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Random seed: the same seed gives the same bytes (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Ordinary (non-heartbeat) frames mixed in per heartbeat frame, e.g. 500.
    #[arg(long, default_value_t = 0.0)]
    pub ordinary_ratio: f64,
    /// Tag every association without its own VLAN with this 802.1Q id.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Map every IPv4 address of the scenario into fd00:6862::/96.
    #[arg(long)]
    pub ipv6: bool,
    /// With --iface: replay faster (2.0) or slower (0.5) than real time.
    #[arg(long, default_value_t = 1.0, requires = "iface")]
    pub speed: f64,
    /// Where to write the ground truth (default `<pcap>.truth.json`; none with --iface unless given).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Print the built-in scenario's TOML and exit (a starting point for your own).
    #[arg(long)]
    pub show: bool,
}

pub fn run(args: HbgenArgs) -> Result<()> {
    if args.show {
        match BUILTIN.iter().find(|(n, _)| *n == args.scenario) {
            Some((_, text)) => {
                print!("{text}");
                return Ok(());
            }
            None => bail!("--show: {:?} is not a built-in scenario", args.scenario),
        }
    }
    if !(args.ordinary_ratio.is_finite() && args.ordinary_ratio >= 0.0) {
        bail!("--ordinary-ratio {}: must be >= 0", args.ordinary_ratio);
    }
    if args.associations.is_some() && args.scenario != crowd::SCENARIO {
        bail!("--associations is for --scenario crowd");
    }
    let crowd;
    let (frames, mut truth): (Box<dyn Iterator<Item = TimedFrame>>, _) =
        if args.scenario == crowd::SCENARIO {
            if args.vlan.is_some() || args.ipv6 || args.ordinary_ratio > 0.0 {
                bail!("--scenario crowd takes no --vlan, --ipv6 or --ordinary-ratio");
            }
            crowd = Crowd::new(
                super::scenario::default_start_ns(),
                args.associations.unwrap_or(100_000),
                args.duration.unwrap_or(30.0),
                args.seed.unwrap_or(1),
            )?;
            (Box::new(crowd.frames()), crowd.truth())
        } else if args.scenario == noise::SCENARIO {
            // Ordinary traffic on the heartbeat ports only: no association, no expectation.
            if args.vlan.is_some() || args.ipv6 || args.ordinary_ratio > 0.0 {
                bail!("--scenario quiet takes no --vlan, --ipv6 or --ordinary-ratio");
            }
            let duration = args.duration.unwrap_or(60.0);
            if !(duration.is_finite() && duration > 0.0) {
                bail!("--duration {duration}: must be > 0");
            }
            let (frames, truth) = noise::generate(
                super::scenario::default_start_ns(),
                (duration * 1e9) as u64,
                args.seed.unwrap_or(1),
            );
            (Box::new(frames.into_iter()), truth)
        } else {
            let mut sc = Scenario::load(&args.scenario)?;
            sc.apply(&Overrides {
                seed: args.seed,
                duration_s: args.duration,
                vlan: args.vlan,
                ipv6: args.ipv6,
            })?;
            let mut capture = super::generate(&sc);
            let opts = OrdinaryOptions {
                ratio: args.ordinary_ratio,
                vlan: args.vlan.unwrap_or(100),
                avoid_ports: scenario_ports(&capture.truth),
                ..OrdinaryOptions::default()
            };
            let frames = ordinary::mix(capture.take_frames(), sc.start_unix_ns, sc.seed, &opts);
            (Box::new(frames), capture.truth)
        };
    let (stats, truth_path, wrote) = match (&args.pcap, &args.iface) {
        (Some(path), _) => {
            let format = if args.pcapng {
                Format::PcapNg
            } else {
                Format::Pcap { nanos: args.nanos }
            };
            let stats = output::write_file(path, format, frames)?;
            let truth = args
                .truth
                .clone()
                .unwrap_or_else(|| output::truth_path(path));
            (stats, Some(truth), path.display().to_string())
        }
        (None, Some(iface)) => {
            let stats = output::send(iface, frames, args.speed)?;
            (stats, args.truth.clone(), format!("interface {iface}"))
        }
        (None, None) => bail!("give --pcap FILE or --iface IF"),
    };
    truth.generated = stats;
    let g = &truth.generated;
    let behind = g
        .max_behind_ms
        .map(|ms| format!("; at most {ms} ms behind the timestamps"))
        .unwrap_or_default();
    eprintln!(
        "hbgen: scenario {} (seed {}): {} frames ({} heartbeat, {} ordinary) to {wrote}; {} expected events ({} required){behind}",
        truth.scenario,
        truth.seed,
        g.frames,
        g.heartbeat_frames,
        g.ordinary_frames,
        truth.expected.len(),
        truth.expected.iter().filter(|e| e.required).count()
    );
    if let Some(path) = truth_path {
        output::write_truth(&path, &truth)?;
        eprintln!("hbgen: ground truth in {}", path.display());
    }
    Ok(())
}

/// Every port the scenario's heartbeats use, so ordinary traffic stays off them.
fn scenario_ports(truth: &super::truth::Truth) -> Vec<u16> {
    let mut v: Vec<u16> = truth
        .associations
        .iter()
        .flat_map(|a| [a.source.port, a.destination.port])
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
