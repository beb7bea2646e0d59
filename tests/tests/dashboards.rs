//! What ships for Prometheus, Grafana and Loki (packaging/prometheus, packaging/grafana,
//! packaging/loki), checked by their real consumers: the alert rules by `promtool test
//! rules`; every PromQL query of the dashboard and the rules by a real Prometheus that
//! scrapes a live agent watching the story scenario (each must return data); every LogQL
//! query by Grafana's own LogQL grammar (@grafana/lezer-logql). No Grafana or Loki server
//! can be installed here: the dashboard is checked through the queries it runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hbwatch_tests::{free_port, in_vm, require_root, tunes_for_speed, Agent, VethNs};
use serde_json::Value;

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel)
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(packaging(rel)).unwrap()).unwrap()
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/hbwatch-dashboard.json")).unwrap(),
    )
    .unwrap()
}

/// The `expr` of every rule in a rule file.
fn rule_exprs(rel: &str) -> Vec<String> {
    let y = yaml(rel);
    let mut out = Vec::new();
    for group in y["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push(rule["expr"].as_str().unwrap().trim().to_string());
        }
    }
    out
}

/// The dashboard's queries for one data source type (`prometheus`, `loki`): panel
/// targets, variable queries, annotations.
fn dashboard_queries(d: &Value, ds: &str) -> Vec<String> {
    let is = |v: &Value| v["datasource"]["type"] == ds;
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if is(t) {
                out.push(t["expr"].as_str().unwrap().to_string());
            }
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if is(a) {
            out.push(a["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

/// A dashboard query as Grafana sends it: variables at "All", the rate interval 1m.
fn as_sent(q: &str) -> String {
    q.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$protocol", ".*")
        .replace("$host", ".*")
        .replace("$action", ".*")
}

/// An alert expression `QUERY > N` (or `==`, `>=`) without its threshold: the query.
fn without_threshold(expr: &str) -> String {
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = [" > ", " >= ", " == ", " < "]
        .iter()
        .filter_map(|op| expr.rfind(op))
        .max()
        .unwrap_or_else(|| panic!("no threshold in {expr}"));
    expr[..at].trim().to_string()
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    if in_vm() {
        eprintln!("promtool is not in the VM: checked on the host run");
        return;
    }
    let dir = packaging("prometheus");
    for args in [
        vec!["check", "rules", "hbwatch-alerts.yml"],
        vec!["test", "rules", "hbwatch-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus; cargo xtask bootstrap installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.join("hbwatch-alerts.test.yml")).unwrap();
    let rules = yaml("prometheus/hbwatch-alerts.yml");
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool test"
        );
    }
}

/// Every LogQL query (dashboard targets, annotations and variable, Loki ruler rules)
/// parses with Grafana's LogQL grammar, run by node.
#[test]
fn logql_queries_parse_with_grafanas_grammar() {
    if in_vm() {
        eprintln!("node is not in the VM: checked on the host run");
        return;
    }
    let prefix = PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/hbwatch/npm");
    assert!(
        prefix.join("node_modules/@grafana/lezer-logql").exists(),
        "Grafana's LogQL grammar is missing: cargo xtask bootstrap installs it ({})",
        prefix.display()
    );
    let d = dashboard();
    let mut queries: Vec<String> = dashboard_queries(&d, "loki");
    let vars = d["templating"]["list"].as_array().unwrap();
    // label_values(SELECTOR, label): the selector is LogQL.
    for v in vars.iter().filter(|v| v["datasource"]["type"] == "loki") {
        let q = v["query"].as_str().unwrap();
        let selector = q
            .strip_prefix("label_values(")
            .and_then(|s| s.rsplit_once(','))
            .map(|(sel, _)| sel.to_string())
            .unwrap_or_else(|| panic!("unexpected Loki variable query {q}"));
        queries.push(selector);
    }
    let rules = rule_exprs("loki/hbwatch-rules.yml");
    assert!(rules.len() >= 3, "{rules:?}");
    queries.extend(rules);
    assert!(queries.len() >= 6, "{queries:?}");
    let script = prefix.join("hbwatch-check-logql.mjs");
    std::fs::write(
        &script,
        "import { parser } from '@grafana/lezer-logql';\n\
         import { readFileSync } from 'node:fs';\n\
         const queries = JSON.parse(readFileSync(0, 'utf8'));\n\
         let bad = 0;\n\
         for (const q of queries) {\n\
         \x20 let at = -1;\n\
         \x20 parser.parse(q).iterate({ enter: (n) => { if (n.type.isError && at < 0) at = n.from; } });\n\
         \x20 if (at >= 0) { bad++; console.log(`error at ${at}: ${q.slice(0, at)} <<HERE>> ${q.slice(at)}`); }\n\
         }\n\
         process.exit(bad ? 1 : 0);\n",
    )
    .unwrap();
    let mut node = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let sent: Vec<String> = queries.iter().map(|q| as_sent(q)).collect();
    use std::io::Write as _;
    node.stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&sent).unwrap().as_bytes())
        .unwrap();
    let out = node.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "LogQL that Grafana's grammar refuses:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And the grammar does refuse bad LogQL (the check can fail).
    let mut node = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    node.stdin
        .take()
        .unwrap()
        .write_all(br#"["sum(count_over_time({job=\"hbwatch\"} | json | x=( [5m]))"]"#)
        .unwrap();
    assert!(!node.wait().unwrap().success());
}

struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Debian's Prometheus scraping `target` every second as job `hbwatch`.
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("hbw-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: hbwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; cargo xtask bootstrap installs it)");
        Prometheus { child, addr, dir }
    }

    /// An instant query through the HTTP API: the result vector.
    fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G"])
            .arg(format!("http://{}/api/v1/query", self.addr))
            .arg("--data-urlencode")
            .arg(format!("query={q}"))
            .output()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn every_promql_query_returns_data_from_a_prometheus_scraping_a_live_agent() {
    if !require_root("every_promql_query_returns_data_from_a_prometheus_scraping_a_live_agent") {
        return;
    }
    if in_vm() {
        eprintln!("prometheus is not in the VM: checked on the host run");
        return;
    }
    let net = VethNs::create();
    let metrics = format!("127.0.0.1:{}", free_port());
    // The story at 10x speed, as live_hbgen plays it (intervals a tenth too).
    let tunes = tunes_for_speed(10);
    let mut args = vec!["--iface", &net.host, "--metrics-listen", &metrics];
    args.extend(tunes.iter().map(String::as_str));
    let mut agent = Agent::start(&args);
    let prom = Prometheus::start(&metrics);
    net.play_hbgen(&["--scenario", "story", "--speed", "10"]);

    let d = dashboard();
    let mut queries: Vec<String> = dashboard_queries(&d, "prometheus")
        .iter()
        .map(|q| as_sent(q))
        .collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["datasource"]["type"] == "prometheus" {
            // label_values(QUERY, label): the series behind the variable.
            let q = v["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap();
            queries.push(as_sent(&inner));
        }
    }
    let rules = rule_exprs("prometheus/hbwatch-alerts.yml");
    queries.extend(rules.iter().map(|e| without_threshold(e)));
    assert!(queries.len() >= 20, "{queries:#?}");

    // Prometheus has scraped for a while (rates need two samples in their window).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes = prom
            .query("count_over_time(up{job=\"hbwatch\"}[1m])")
            .ok()
            .and_then(|r| r.first()?["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if scrapes >= 8.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped the agent {scrapes} times"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut empty = Vec::new();
    for q in &queries {
        match prom.query(q) {
            Ok(r) if !r.is_empty() => {}
            Ok(_) => empty.push(format!("no data: {q}")),
            Err(e) => empty.push(format!("{e}: {q}")),
        }
    }
    // What the panels show is what happened: the story's associations went down and
    // lost heartbeats.
    let down = prom
        .query("max_over_time(sum(hbwatch_associations{state=\"down\"})[1m:1s])")
        .unwrap();
    let lost = prom.query("sum(hbwatch_heartbeats_lost_total)").unwrap();
    assert_eq!(agent.stop(), 0);
    assert!(
        empty.is_empty(),
        "{} of {} queries:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    let value = |r: &[Value]| {
        r.first()
            .and_then(|v| v["value"][1].as_str()?.parse::<f64>().ok())
    };
    assert!(value(&down).unwrap_or(0.0) >= 1.0, "{down:?}");
    assert!(value(&lost).unwrap_or(0.0) >= 1.0, "{lost:?}");
}
