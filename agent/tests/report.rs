//! `hbwatch analyze --report`, read by its real consumer: a browser. The story scenario
//! from `hbwatch hbgen` (capture and ground truth), the report rendered by Debian's
//! headless Chromium: the DOM it builds (`--dump-dom`) has one lane per association of
//! the `--summary` table, one marker per alert event, shaded outages where the
//! generator scripted them; its screenshot is a picture, not a blank page.
//!
//! Needs `chromium` on PATH (`cargo xtask bootstrap` installs it; CI does): without it
//! the test fails and says how to install it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn hbwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hbwatch"))
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(dir) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!(
        "Chromium is missing: this test renders the report with headless Chromium. \
         Install it with `sudo apt-get install chromium` (Debian/Ubuntu) or `cargo xtask bootstrap`"
    );
}

/// Chromium headless on `html` with `args` (a fresh profile, nothing fetched in the
/// background); stdout, and the wall time it took. Killed after 120 s.
fn run_chromium(html: &Path, args: &[String]) -> (String, Duration) {
    let profile = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (reader.join().unwrap(), started.elapsed())
}

/// An element's start tag as serialized by the browser.
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: BTreeMap<String, String>,
}

impl Tag {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
    fn has_class(&self, c: &str) -> bool {
        self.attr("class").split_whitespace().any(|x| x == c)
    }
    fn ms(&self, k: &str) -> i64 {
        self.attr(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} on {self:?}"))
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Start tags of a serialized DOM, in document order (attribute values double-quoted,
/// as Chromium serializes them).
fn tags(dom: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        if rest.starts_with('/') || rest.starts_with('!') {
            continue;
        }
        let end = rest.find('>').expect("tag closes");
        let body = &rest[..end];
        let name_end = body
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(body.len());
        let mut tag = Tag {
            name: body[..name_end].to_ascii_lowercase(),
            attrs: BTreeMap::new(),
        };
        let mut a = &body[name_end..];
        while let Some(eq) = a.find("=\"") {
            let key = a[..eq].trim().trim_start_matches('/').trim().to_string();
            let v = &a[eq + 2..];
            let close = v.find('"').expect("attribute closes");
            tag.attrs.insert(key, unescape(&v[..close]));
            a = &v[close + 1..];
        }
        out.push(tag);
        rest = &rest[end..];
    }
    out
}

fn lane_name(protocol: &str, src: &Value, dst: &Value) -> String {
    format!(
        "{protocol} {}:{} -> {}:{}",
        src["ip"].as_str().unwrap(),
        src["port"],
        dst["ip"].as_str().unwrap(),
        dst["port"]
    )
}

/// `peer.down` after this many missed intervals (EVENTS.md), SIP excepted.
fn down_after(protocol: &str) -> u64 {
    match protocol {
        "mds" => 5,
        "ged125" => 2,
        "cs1000-rudp" | "cs1000-ipmg" => 4,
        "sccp" => 3,
        p => panic!("no down_after for {p}"),
    }
}

#[test]
fn story_report_renders_in_chromium() {
    // Before anything else: without Chromium, say how to install it.
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("story.pcap");
    let truth_path = dir.path().join("story.truth.json");
    let html = dir.path().join("incident.html");
    let st = hbwatch()
        .args(["hbgen", "--scenario", "story", "--pcap"])
        .arg(&pcap)
        .arg("--truth")
        .arg(&truth_path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = hbwatch()
        .arg("analyze")
        .arg(&pcap)
        .arg("--summary")
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The associations of the --summary table: its rows after the header (`proto a:p
    // -> b:q heartbeats ...`; the log line saying where the report went follows).
    let stderr = String::from_utf8(out.stderr).unwrap();
    let summary: BTreeMap<String, u64> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("association"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|w| w.len() > 5 && w[2] == "->")
        .map(|w| (w[..4].join(" "), w[4].parse().unwrap()))
        .collect();
    assert!(stderr.contains("report written to"), "{stderr}");
    assert!(summary.len() >= 10, "{stderr}");

    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch, nothing to run.
    for needle in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
    ] {
        assert!(!page.contains(needle), "the report contains {needle}");
    }

    let (dom, dom_time) = run_chromium(&html, &["--dump-dom".to_string()]);
    eprintln!("chromium --dump-dom: {} ms", dom_time.as_millis());
    let tags = tags(&dom);
    assert!(tags.iter().any(|t| t.name == "svg"), "no svg in the DOM");
    for t in &tags {
        assert!(
            !["script", "link", "img", "iframe"].contains(&t.name.as_str()),
            "{t:?}"
        );
    }

    // Lanes: exactly the associations of --summary; every event's association is one.
    let lanes: Vec<&str> = tags
        .iter()
        .filter(|t| t.name == "g" && t.has_class("lane"))
        .map(|t| t.attr("data-assoc"))
        .collect();
    let lane_set: BTreeSet<String> = lanes.iter().map(|s| s.to_string()).collect();
    assert_eq!(lanes.len(), lane_set.len(), "one lane per association");
    assert_eq!(
        lane_set,
        summary.keys().cloned().collect(),
        "lanes vs --summary"
    );
    // Each lane's ticks stand for the heartbeats --summary counts for it.
    let mut lane = None;
    for t in &tags {
        if t.name == "g" && t.has_class("lane") {
            lane = Some(t.attr("data-assoc"));
        } else if t.name == "path" && t.has_class("beats") {
            let l = lane.expect("ticks in a lane");
            assert_eq!(t.attr("data-heartbeats"), summary[l].to_string(), "{l}");
        } else if t.name == "path" && t.has_class("ticks") {
            // Every association here has isolated heartbeats somewhere: some ticks.
            assert!(t.attr("d").starts_with('M'), "{t:?}");
        }
    }
    let ticked = tags
        .iter()
        .filter(|t| t.name == "path" && t.has_class("beats"))
        .count();
    assert_eq!(
        ticked,
        lanes.len(),
        "every association has heartbeats drawn"
    );

    // Markers: one per alert event, on its association's lane, with its action.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        if e["event"]["kind"] == "alert" {
            let lane = lane_name(
                e["network"]["protocol"].as_str().unwrap(),
                &e["source"],
                &e["destination"],
            );
            assert!(lane_set.contains(&lane), "{lane} has no lane");
            expected
                .entry(lane)
                .or_default()
                .push(e["event"]["action"].as_str().unwrap().to_string());
        }
    }
    let mut drawn: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut outages: BTreeMap<String, Vec<&Tag>> = BTreeMap::new();
    let mut lane = None;
    for t in &tags {
        if t.name == "g" && t.has_class("lane") {
            lane = Some(t.attr("data-assoc").to_string());
        } else if t.name == "g" && t.has_class("marker") {
            assert_eq!(t.attr("data-count"), "1", "no decimation here: {t:?}");
            drawn
                .entry(lane.clone().expect("marker in a lane"))
                .or_default()
                .push(t.attr("data-action").to_string());
        } else if t.name == "rect" && t.has_class("outage") {
            outages
                .entry(lane.clone().expect("outage in a lane"))
                .or_default()
                .push(t);
        }
    }
    for v in expected.values_mut().chain(drawn.values_mut()) {
        v.sort();
    }
    let alerts: usize = expected.values().map(Vec::len).sum();
    assert!(alerts >= 20, "{alerts} alerts");
    assert_eq!(drawn, expected, "markers per lane vs alert events");

    // Outages: the ones the generator scripted, where it scripted them.
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let interval_ms: BTreeMap<String, f64> = truth["associations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                lane_name(
                    a["protocol"].as_str().unwrap(),
                    &a["source"],
                    &a["destination"],
                ),
                a["interval_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    let faults: BTreeMap<u64, i64> = truth["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                (f["at_ns"].as_u64().unwrap() / 1_000_000) as i64,
            )
        })
        .collect();
    let expected_all = truth["expected"].as_array().unwrap();
    let mut matched = 0;
    for (i, down) in expected_all.iter().enumerate() {
        let action = down["action"].as_str().unwrap();
        if !(down["required"] == true && ["peer.down", "sip.expired"].contains(&action)) {
            continue;
        }
        let protocol = down["protocol"].as_str().unwrap();
        let lane = lane_name(protocol, &down["source"], &down["destination"]);
        let fault = down["fault"]
            .as_u64()
            .expect("a scripted outage names its fault");
        let up = expected_all[i + 1..]
            .iter()
            .find(|u| {
                u["required"] == true
                    && ["peer.up", "sip.registered"].contains(&u["action"].as_str().unwrap())
                    && lane_name(
                        u["protocol"].as_str().unwrap(),
                        &u["source"],
                        &u["destination"],
                    ) == lane
            })
            .unwrap_or_else(|| panic!("no recovery for {down}"));
        let sip = protocol == "sip";
        // The agent dates `sip.expired` sip.expiry_grace (2 s) after the lapse; the
        // truth's window starts at the lapse and is 1 s wide. Other outages: the truth
        // runs the protocol's own timers, so only capture jitter is left.
        let slack = if sip { 2_500 } else { 500 };
        let window = [
            (down["window_ns"][0].as_u64().unwrap() / 1_000_000) as i64 - slack,
            (down["window_ns"][1].as_u64().unwrap() / 1_000_000) as i64 + slack,
        ];
        let recovered = (up["at_ns"].as_u64().unwrap() / 1_000_000) as i64;
        let rects = outages.get(&lane).map(Vec::as_slice).unwrap_or_default();
        let rect = rects
            .iter()
            .find(|r| (window[0]..=window[1]).contains(&r.ms("data-start-ms")))
            .unwrap_or_else(|| panic!("{lane}: no outage shaded within {window:?}: {rects:?}"));
        assert_eq!(rect.attr("data-action"), action);
        assert_eq!(rect.attr("data-open"), "false");
        assert!(
            (rect.ms("data-end-ms") - recovered).abs() <= 500,
            "{lane}: outage ends at {} ms, recovery at {recovered}",
            rect.ms("data-end-ms")
        );
        // Against the fault itself: declared after it began, within the detection
        // delay: down_after intervals (plus one, the tolerance and the phase of the
        // heartbeat schedule), or for SIP the granted Expires plus the grace.
        let fault_ms = faults[&fault];
        let start = rect.ms("data-start-ms");
        let delay = if sip {
            (down["fields"]["sip.expires"].as_i64().unwrap() + 2) * 1000 + 500
        } else {
            ((down_after(protocol) + 1) as f64 * interval_ms[&lane] * 1.5) as i64
        };
        assert!(
            fault_ms <= start && start - fault_ms <= delay,
            "{lane}: outage declared {} ms after fault {fault} (at most {delay})",
            start - fault_ms
        );
        if !sip {
            // The silence shaded before it starts with the last heartbeat before the
            // fault: at most one interval (plus jitter) earlier.
            let silence = rect.ms("data-silence-start-ms");
            assert!(
                silence <= fault_ms && fault_ms - silence <= interval_ms[&lane] as i64 + 100,
                "{lane}: silence from {silence}, fault at {fault_ms}"
            );
        }
        matched += 1;
    }
    let shaded: usize = outages.values().map(Vec::len).sum();
    assert!(matched >= 4, "{matched} scripted outages");
    assert_eq!(
        shaded, matched,
        "every shaded outage is a scripted one: {outages:?}"
    );

    // The screenshot is a picture of all that, not a blank page.
    let png_path = dir.path().join("incident.png");
    let (_, shot_time) = run_chromium(
        &html,
        &[
            format!("--screenshot={}", png_path.display()),
            "--window-size=1400,2000".to_string(),
        ],
    );
    eprintln!("chromium --screenshot: {} ms", shot_time.as_millis());
    let decoder = png::Decoder::new(std::fs::File::open(&png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1400, 2000));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let colors: BTreeSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    let ink = pixels
        .iter()
        .filter(|p| p[0] < 200 || p[1] < 200 || p[2] < 200)
        .count();
    // Outage shading and critical markers: clearly red.
    let red = pixels
        .iter()
        .filter(|p| p[0] as i32 > p[1] as i32 + 60 && p[0] as i32 > p[2] as i32 + 60)
        .count();
    // Heartbeat ticks: clearly blue.
    let blue = pixels
        .iter()
        .filter(|p| p[2] as i32 > p[0] as i32 + 80)
        .count();
    assert!(colors.len() > 50, "{} colours: blank?", colors.len());
    assert!(
        ink * 100 > pixels.len() * 2,
        "{ink} of {} pixels inked",
        pixels.len()
    );
    assert!(red > 500 && blue > 2000, "red {red}, blue {blue}");
}

/// Several captures: one section each, the event stream split by file (no Chromium
/// needed: the page's own markup).
#[test]
fn one_timeline_per_capture() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.pcap");
    let b = dir.path().join("b.pcap");
    let html = dir.path().join("two.html");
    let st = hbwatch()
        .args(["hbgen", "--scenario", "story", "--pcap"])
        .arg(&a)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(&a, &b).unwrap();
    let out = hbwatch()
        .arg("analyze")
        .args([&a, &b])
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success());
    let alerts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"kind\":\"alert\""))
        .count();
    let page = std::fs::read_to_string(&html).unwrap();
    let timelines: Vec<&str> = page
        .split("<svg class=\"timeline\"")
        .skip(1)
        .map(|s| s.split("</svg>").next().unwrap())
        .collect();
    assert_eq!(timelines.len(), 2);
    assert_eq!(timelines[0], timelines[1].replace("b.pcap", "a.pcap"));
    let markers = timelines[0].matches("class=\"marker").count();
    assert_eq!(
        markers * 2,
        alerts,
        "each capture's alerts on its own timeline"
    );
}

/// A capture cut by a small snaplen: the warning `analyze` prints is in the report's
/// capture metadata too.
#[test]
fn snaplen_warning_in_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.pcap");
    let cut = dir.path().join("cut.pcap");
    let html = dir.path().join("cut.html");
    let st = hbwatch()
        .args(["hbgen", "--scenario", "story", "--pcap"])
        .arg(&whole)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // Classic pcap: a 24-byte header, then per frame 16 bytes (ts_sec, ts_usec,
    // incl_len, orig_len) and incl_len bytes; keep 96 of each, orig_len as it was.
    // hbgen writes big-endian pcap; either order is read.
    let data = std::fs::read(&whole).unwrap();
    let big = data[..4] == [0xa1, 0xb2, 0xc3, 0xd4];
    let rd = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().unwrap();
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let wr = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = data[..24].to_vec();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = rd(&data[at + 8..at + 12]) as usize;
        let keep = incl.min(96);
        out.extend_from_slice(&data[at..at + 8]);
        out.extend_from_slice(&wr(keep as u32));
        out.extend_from_slice(&data[at + 12..at + 16]);
        out.extend_from_slice(&data[at + 16..at + 16 + keep]);
        at += 16 + incl;
    }
    std::fs::write(&cut, out).unwrap();
    let out = hbwatch()
        .arg("analyze")
        .arg(&cut)
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("snaplen (96 bytes)"), "{stderr}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("cut to the capture&#39;s snaplen (96 bytes)"),
        "the snaplen warning is not in the report"
    );
}
