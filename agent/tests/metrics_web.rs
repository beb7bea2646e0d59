//! The metrics endpoint over HTTPS with basic auth, scraped by a real Prometheus (Debian
//! `prometheus`, installed by `cargo xtask bootstrap`; without it the test fails under
//! CI=true and skips loudly otherwise).
//!
//! The endpoint is `hbwatch::metrics::serve`, the server `hbwatch run` starts for
//! `[metrics]` (run itself needs root: tests/tests/live_ops.rs scrapes that one over
//! plain HTTP). A private CA (rcgen) signs its certificate for `hbwatch.test`;
//! Prometheus scrapes it with two jobs that trust that CA, one with the right password
//! file and one with a wrong one. What an operator checks: `up` is 1 for the first and 0
//! for the second, whose target shows the 401, and the samples came through.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_tcp_port;
use support::pki::Pki;

fn prometheus() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/prometheus");
    if bin.exists() {
        return Some(bin);
    }
    let msg = "prometheus is not installed (Debian: prometheus; `cargo xtask bootstrap`)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

fn write(dir: &Path, name: &str, s: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET` on Prometheus's HTTP API; the JSON answer, or None while it is not up.
fn api(port: u16, path: &str) -> Option<Value> {
    let mut resp = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// `up` per job, once every job has been scraped.
fn up_by_job(port: u16, jobs: &[&str]) -> Option<Vec<(String, String)>> {
    let v = api(port, "/api/v1/query?query=up")?;
    let mut got: Vec<(String, String)> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap_or_default().to_string(),
                r["value"][1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    (got.len() == jobs.len()).then_some(got)
}

#[test]
fn prometheus_scrapes_over_https_with_the_right_password_only() {
    let Some(bin) = prometheus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new("hbwatch test CA");
    let (cert, key) = pki.issue(&["hbwatch.test"], "hbwatch.test");
    let web = hbwatch::metrics::WebConfig {
        tls_cert: Some(write(d, "metrics.pem", &cert)),
        tls_key: Some(write(d, "metrics.key", &key)),
        basic_auth_user: Some("prometheus".into()),
        basic_auth_password_file: Some(write(d, "metrics.password", "s3cret-Pa55\n")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(hbwatch::metrics::Metrics::new());
    metrics.reloaded(true);
    let addr = rt
        .block_on(hbwatch::metrics::serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            &web,
        ))
        .unwrap();

    // Prometheus's side: the same password in its own file (as on a real scraper),
    // and a wrong one.
    let ca = write(d, "ca.pem", &pki.ca_pem);
    let good = write(d, "good.password", "s3cret-Pa55\n");
    let wrong = write(d, "wrong.password", "s3cret-Pa56\n");
    let job = |name: &str, password: &Path| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    scrape_interval: 1s\n    \
             scrape_timeout: 1s\n    tls_config:\n      ca_file: {}\n      \
             server_name: hbwatch.test\n    basic_auth:\n      username: prometheus\n      \
             password_file: {}\n    static_configs:\n      - targets: ['{addr}']\n",
            ca.display(),
            password.display()
        )
    };
    let conf = write(
        d,
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("good", &good),
            job("wrong", &wrong)
        ),
    );
    let port = free_tcp_port();
    let _prom = Killed(
        Command::new(bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::fs::File::create(d.join("prometheus.out")).unwrap())
            .stderr(std::fs::File::create(d.join("prometheus.err")).unwrap())
            .spawn()
            .expect("prometheus starts"),
    );
    let log = || std::fs::read_to_string(d.join("prometheus.err")).unwrap_or_default();

    let until = Instant::now() + Duration::from_secs(30);
    let up = loop {
        if let Some(up) = up_by_job(port, &["good", "wrong"]) {
            break up;
        }
        assert!(Instant::now() < until, "no scrape in 30 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        up,
        [
            ("good".to_string(), "1".to_string()),
            ("wrong".to_string(), "0".to_string())
        ],
        "up by job"
    );

    // The failing target says why; the good one brought hbwatch's metrics.
    let targets = api(port, "/api/v1/targets").unwrap();
    let wrong_target = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["labels"]["job"] == "wrong")
        .unwrap()
        .clone();
    let err = wrong_target["lastError"].as_str().unwrap();
    assert!(err.contains("401"), "wrong password: {err}");
    assert_eq!(wrong_target["scrapeUrl"], format!("https://{addr}/metrics"));
    let v = api(
        port,
        "/api/v1/query?query=hbwatch_config_reloads_total%7Bresult%3D%22ok%22%7D",
    )
    .unwrap();
    let series = v["data"]["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "from the good job only: {v}");
    assert_eq!(series[0]["metric"]["job"], "good");
    assert_eq!(series[0]["value"][1], "1", "{v}");
}
