//! `hbwatch-bench`: the measurements behind `cargo xtask bench` (which builds it and
//! runs it as root). Writes `summary.json`, `summary.md` and `per-packet.png` to `--out`.

mod frames;
mod offline;
mod pipeline;
mod plot;
mod report;
mod stats;
mod veth;
mod xdp;

use std::path::PathBuf;

use anyhow::{ensure, Context as _, Result};
use clap::Parser;
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(name = "hbwatch-bench")]
struct Cli {
    /// Where summary.json, summary.md and the plot go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The release hbwatch binary (for `analyze`).
    #[arg(long, default_value = "target/release/hbwatch")]
    hbwatch: PathBuf,
    /// Benchmarks to run (comma-separated): xdp, pipeline, offline, veth, scale.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "xdp,pipeline,offline,veth,scale"
    )]
    only: Vec<String>,
    /// Trials per figure (each figure is the median over trials; at least 5).
    #[arg(long, default_value_t = 7)]
    trials: usize,
    /// BPF_PROG_TEST_RUN repeat per trial (at least 1e6 for the reported figures).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// New associations per trial (one test run each).
    #[arg(long, default_value_t = 20_000)]
    new_flows: u32,
    /// Frames in the generated capture.
    #[arg(long, default_value_t = 1_200_000)]
    frames: u64,
    /// Frames sent through the veth pair per run.
    #[arg(long, default_value_t = 1_000_000)]
    veth_packets: u64,
    /// Association counts for the scale benchmark (offline analysis).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    scale: Vec<u64>,
    /// Keep the scale benchmark's captures in `--out` (for profiling `analyze` on them).
    #[arg(long)]
    keep_captures: bool,
    /// Smaller everything, for trying the bench itself (figures not for BENCHMARKS.md).
    #[arg(long)]
    quick: bool,
    /// Only redraw the plot and tables from an existing summary.json.
    #[arg(long)]
    report_only: bool,
    /// Run one XDP case's frame for 10 s and exit: for `perf record -a` (no figures).
    #[arg(long, value_name = "CASE")]
    profile: Option<String>,
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.trials = cli.trials.min(3);
        cli.repeat = cli.repeat.min(100_000);
        cli.new_flows = cli.new_flows.min(2000);
        cli.frames = cli.frames.min(200_000);
        cli.veth_packets = cli.veth_packets.min(100_000);
        cli.scale = vec![20_000];
    }
    if let Some(case) = &cli.profile {
        return xdp::spin(case, 10.0);
    }
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let summary_path = cli.out.join("summary.json");
    let summary: Value = if cli.report_only {
        serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?
    } else {
        ensure!(
            cli.quick || cli.trials >= 5,
            "at least 5 trials per figure (medians)"
        );
        let mut results = Map::new();
        results.insert("machine".into(), report::machine());
        results.insert(
            "quick".into(),
            json!(cli.quick || cli.repeat < 1_000_000 || cli.frames < 1_000_000),
        );
        for what in &cli.only {
            let t = std::time::Instant::now();
            let v = match what.as_str() {
                "xdp" => xdp::bench(&xdp::Options {
                    trials: cli.trials,
                    repeat: cli.repeat,
                    new_flows: cli.new_flows,
                })?,
                "pipeline" => pipeline::bench(&pipeline::Options {
                    trials: cli.trials,
                    runs: cli.repeat,
                    flood_runs: cli.repeat.saturating_mul(2),
                })?,
                "offline" => offline::bench(
                    &offline::Options {
                        trials: if cli.quick { 1 } else { 5 },
                        frames: cli.frames,
                        span_s: 120,
                        rudp_pairs: 60,
                    },
                    &cli.hbwatch,
                    &cli.out,
                )?,
                "veth" => veth::bench(
                    &cli.hbwatch,
                    if cli.quick { 1 } else { 5 },
                    cli.veth_packets,
                )?,
                "scale" => offline::scale(
                    &cli.hbwatch,
                    &cli.out,
                    if cli.quick { 1 } else { 5 },
                    &cli.scale,
                    cli.keep_captures,
                )?,
                other => anyhow::bail!(
                    "unknown benchmark {other:?} (xdp, pipeline, offline, veth, scale)"
                ),
            };
            eprintln!("bench: {what} took {:.0} s", t.elapsed().as_secs_f64());
            results.insert(what.clone(), v);
        }
        let v = Value::Object(results);
        std::fs::write(&summary_path, serde_json::to_string_pretty(&v)? + "\n")?;
        v
    };
    let md = report::markdown(&summary);
    std::fs::write(cli.out.join("summary.md"), &md)?;
    if summary.get("xdp").is_some() {
        plot::per_packet(&summary, &cli.out.join("per-packet.png"))?;
    }
    print!("{md}");
    Ok(())
}

/// An executable `name` on PATH?
pub fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
