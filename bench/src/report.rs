//! The machine description and the markdown tables of a summary.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::{json, Value};

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let s = if s.trim().is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        s.into_owned()
    };
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// What the figures were measured on: they mean little without it.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| (kib as f64 / (1 << 20) as f64).round());
    let hypervisor = cpuinfo.contains(" hypervisor");
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_gib,
        "virtual_machine": hypervisor,
        "kernel": first_line("uname", &["-r"]),
        "bpf_jit": std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").ok().map(|s| s.trim().to_string()),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
        "tshark": first_line("tshark", &["-v"]),
        "date": first_line("date", &["-u", "+%Y-%m-%dT%H:%MZ"]),
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

pub fn markdown(s: &Value) -> String {
    let mut md = String::new();
    let m = &s["machine"];
    let _ = writeln!(
        md,
        "Measured {} on {} ({} CPUs, {} GiB{}), kernel {}, BPF JIT {}; load average at start {}.{}\n",
        m["date"].as_str().unwrap_or("?"),
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        m["memory_gib"],
        if m["virtual_machine"] == true { ", virtual machine" } else { "" },
        m["kernel"].as_str().unwrap_or("?"),
        m["bpf_jit"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
        if s["quick"] == true {
            " **Quick run: fewer trials/repeats, not for BENCHMARKS.md.**"
        } else {
            ""
        },
    );
    if let Some(x) = s.get("xdp") {
        let _ = writeln!(
            md,
            "### XDP per-packet cost (BPF_PROG_TEST_RUN, repeat {}, median of {} trials)\n",
            x["repeat"], x["trials"]
        );
        md.push_str("| case | ratio vs empty XDP | target | | agent ns | baseline ns | records/run | what the frame exercises |\n");
        md.push_str("|---|---:|---:|---|---:|---:|---:|---|\n");
        for c in x["cases"].as_array().into_iter().flatten() {
            let ratio = f(&c["ratio"]);
            let (target, met) = match c["target"].as_f64() {
                Some(t) => (format!("<= {t}x"), verdict(ratio <= t)),
                None => ("-".into(), ""),
            };
            let _ = writeln!(
                md,
                "| {} | {:.2}x | {} | {} | {:.1} | {:.1} | {} | {}{} |",
                c["name"].as_str().unwrap_or("?"),
                ratio,
                target,
                met,
                f(&c["ns"]),
                f(&c["baseline_ns"]),
                c["records_per_run"],
                c["what"].as_str().unwrap_or(""),
                if c["repeat"] == 1 {
                    format!(" ({} calls per trial, repeat 1)", c["calls"])
                } else {
                    String::new()
                },
            );
        }
        md.push('\n');
    }
    if let Some(p) = s.get("pipeline") {
        let rate = f(&p["ndjson_records_per_cpu_s"]);
        let lines = f(&p["ndjson_lines_per_cpu_s"]);
        let ratio = f(&p["ratio"]);
        let fl = &p["flood"];
        let _ = writeln!(
            md,
            "### Event pipeline (ring buffer -> correlation -> NDJSON on /dev/null, median of {} trials of {} records)\n",
            p["trials"], p["records_per_fill"]
        );
        md.push_str("| figure | value | target | |\n|---|---:|---:|---|\n");
        let _ = writeln!(
            md,
            "| records/s, NDJSON consumer (per CPU second) | {} | >= 1 M | {} |",
            si(rate),
            verdict(rate >= 1e6)
        );
        let _ = writeln!(
            md,
            "| NDJSON lines/s (one line per {} records) | {} | | |",
            p["records_per_line"],
            si(lines)
        );
        let _ = writeln!(
            md,
            "| records/s, NDJSON consumer (wall) | {} | | |",
            si(f(&p["ndjson_records_per_wall_s"]))
        );
        let _ = writeln!(
            md,
            "| records/s, counting consumer (per CPU second) | {} | | |",
            si(f(&p["count_records_per_cpu_s"]))
        );
        let _ = writeln!(
            md,
            "| drain: NDJSON / counting (per CPU second) | {:.2}x | >= 0.3x | {} |",
            ratio,
            verdict(ratio >= 0.3)
        );
        let unaccounted = fl["unaccounted"].as_i64().unwrap_or(-1);
        let fratio = f(&fl["ratio"]);
        let _ = writeln!(
            md,
            "| flood (4 MiB ring, producer flat out): records read/s, NDJSON / counting (wall) | {} / {} | | |",
            si(f(&fl["ndjson_read_per_wall_s"])),
            si(f(&fl["count_read_per_wall_s"]))
        );
        let _ = writeln!(
            md,
            "| flood: share of produced records read, NDJSON / counting | {:.0} % / {:.0} % | | |",
            100.0 * f(&fl["ndjson_kept"]),
            100.0 * f(&fl["count_kept"])
        );
        let _ = writeln!(
            md,
            "| flood: NDJSON / counting (records read per second) | {:.2}x | >= 0.3x | {} |",
            fratio,
            verdict(fratio >= 0.3)
        );
        let _ = writeln!(
            md,
            "| flood, NDJSON runs: produced / read / lost (counted) / unaccounted, all runs | {} / {} / {} / {} | 0 unaccounted | {} |\n",
            fl["ndjson_produced"],
            fl["ndjson_read"],
            fl["ndjson_lost_counted"],
            unaccounted,
            verdict(unaccounted == 0)
        );
    }
    if let Some(o) = s.get("offline") {
        let ratio = f(&o["ratio"]);
        let _ = writeln!(
            md,
            "### Offline analysis (`hbwatch analyze` vs `tshark -Y '{}'`, median of {} trials)\n",
            o["tshark_filter"].as_str().unwrap_or("?"),
            o["trials"]
        );
        let _ = writeln!(
            md,
            "Capture: {} frames ({} heartbeat frames, {} associations, {} MB, {} s of traffic).\n",
            o["frames"],
            o["heartbeat_frames"],
            o["associations"],
            o["bytes"].as_u64().unwrap_or(0) >> 20,
            o["span_s"]
        );
        md.push_str("| figure | value | target | |\n|---|---:|---:|---|\n");
        let _ = writeln!(
            md,
            "| hbwatch analyze frames/s (CPU / wall) | {} / {} | | |",
            si(f(&o["hbwatch_frames_per_cpu_s"])),
            si(f(&o["hbwatch_frames_per_wall_s"]))
        );
        let _ = writeln!(
            md,
            "| tshark frames/s (CPU / wall) | {} / {} | | |",
            si(f(&o["tshark_frames_per_cpu_s"])),
            si(f(&o["tshark_frames_per_wall_s"]))
        );
        let _ = writeln!(
            md,
            "| hbwatch / tshark (CPU time) | {:.0}x | >= 100x | {} |",
            ratio,
            verdict(ratio >= 100.0)
        );
        let _ = writeln!(
            md,
            "| hbwatch / tshark (wall time) | {:.0}x | | |",
            f(&o["ratio_wall"])
        );
        let c = &o["check"];
        let _ = writeln!(
            md,
            "| cross-check: heartbeats hbwatch counted / frames tshark matched | {} / {} | | |\n",
            c["hbwatch_heartbeats"], c["tshark_matched"]
        );
    }
    if let Some(v) = s.get("veth") {
        let _ = writeln!(
            md,
            "### CPU per packet on a veth pair (median of {} trials of {} frames, {:.1} % heartbeats)\n",
            v["trials"],
            v["packets"],
            100.0 * f(&v["heartbeat_share"])
        );
        md.push_str(
            "| observer | CPU s per million frames | beyond nothing attached |\n|---|---:|---:|\n",
        );
        let _ = writeln!(
            md,
            "| nothing attached | {:.3} | - |",
            f(&v["nothing_cpu_s_per_m"])
        );
        for m in ["driver", "skb", "tc"] {
            let x = &v[m];
            let attach = x["attach"].as_str().unwrap_or("?");
            let kind = if m == "tc" { "TC" } else { "XDP" };
            let _ = writeln!(
                md,
                "| empty {kind} program ({attach}) | {:.3} | {:.3} |",
                f(&x["empty_cpu_s_per_m"]),
                f(&x["empty_extra_cpu_s_per_m"])
            );
            let _ = writeln!(
                md,
                "| hbwatch run --mode {m} ({attach}) | {:.3} | {:.3} |",
                f(&x["agent_cpu_s_per_m"]),
                f(&x["agent_extra_cpu_s_per_m"])
            );
        }
        let _ = writeln!(
            md,
            "| tcpdump -w /dev/null '{}' | {:.3} | {:.3} |",
            v["tcpdump_filter"].as_str().unwrap_or("?"),
            f(&v["tcpdump_cpu_s_per_m"]),
            f(&v["tcpdump_extra_cpu_s_per_m"])
        );
        md.push_str(
            "\n| hbwatch's extra CPU / tcpdump's (medians of per-trial ratios) | target | | \
             without the hook's own cost (hbwatch minus the empty program) |\n|---|---:|---|---:|\n",
        );
        // Extra CPU at or below zero is the host's noise outweighing what is measured:
        // no ratio of it says anything (a slow hour once gave -7x, "met").
        let tcpdump_extra = f(&v["tcpdump_extra_cpu_s_per_m"]);
        for m in ["driver", "skb", "tc"] {
            let x = &v[m];
            let ratio = f(&x["ratio"]);
            let noise =
                !(tcpdump_extra > 0.0 && f(&x["agent_extra_cpu_s_per_m"]) > 0.0 && ratio >= 0.0);
            let _ = writeln!(
                md,
                "| --mode {m} | {ratio:.2}x | <= 0.2x | {} | {:.2}x |",
                if noise {
                    "**not measured** (noise: extra CPU <= 0)"
                } else {
                    verdict(ratio <= 0.2)
                },
                f(&x["ratio_program_only"])
            );
        }
        md.push('\n');
    }
    if let Some(sc) = s.get("scale") {
        let _ = writeln!(
            md,
            "### Scale: `hbwatch analyze` with many associations (median of {} trials, against {} associations in the same trial)\n",
            sc["trials"], sc["baseline_associations"]
        );
        md.push_str("| associations | frames | frames/s (CPU) | vs baseline | peak RSS MiB (baseline) |\n|---:|---:|---:|---:|---:|\n");
        for z in sc["sizes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2}x | {:.0} ({:.0}) |",
                z["associations"],
                z["frames"],
                si(f(&z["frames_per_cpu_s"])),
                f(&z["ratio"]),
                f(&z["peak_rss_mib"]),
                f(&z["baseline_peak_rss_mib"])
            );
        }
        let _ = writeln!(
            md,
            "\nThe benches load the kernel's flow table at {} associations (LRU; the agent sizes it by \
             `agent.max_associations`): beyond that, live, the stalest are evicted, and one that \
             beats again is re-inserted (see `new association (full table)` above) and counted as \
             its next heartbeat, an eviction reported.\n",
            sc["kernel_flow_table"]
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(tcpdump_extra: f64, agent_extra: f64, ratio: f64) -> Value {
        let mode = serde_json::json!({
            "agent_cpu_s_per_m": 2.0, "agent_extra_cpu_s_per_m": agent_extra, "attach": "xdp",
            "empty_cpu_s_per_m": 2.0, "empty_extra_cpu_s_per_m": 0.1,
            "ratio": ratio, "ratio_program_only": ratio,
        });
        serde_json::json!({"veth": {
            "driver": mode, "skb": mode, "tc": mode, "heartbeat_share": 0.025,
            "nothing_cpu_s_per_m": 2.0, "packets": 1000000, "trials": 5,
            "tcpdump_cpu_s_per_m": 2.2, "tcpdump_extra_cpu_s_per_m": tcpdump_extra,
            "tcpdump_filter": "udp port 15000",
        }})
    }

    fn driver_line(md: &str) -> &str {
        md.lines()
            .find(|l| l.starts_with("| --mode driver"))
            .unwrap()
    }

    #[test]
    fn a_veth_ratio_of_noise_is_not_reported_met() {
        // A slow hour: tcpdump's extra CPU below zero made -7x, reported "met".
        let md = markdown(&veth(-0.23, 1.4, -7.26));
        assert!(driver_line(&md).contains("not measured"), "{md}");
        let md = markdown(&veth(0.2, -0.1, 0.1));
        assert!(driver_line(&md).contains("not measured"), "{md}");
        let md = markdown(&veth(0.2, 0.02, 0.1));
        assert!(driver_line(&md).contains("| met |"), "{md}");
        let md = markdown(&veth(0.2, 0.7, 3.5));
        assert!(driver_line(&md).contains("**missed**"), "{md}");
    }
}
