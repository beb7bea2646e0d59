//! `--output file:` end to end: `hbwatch analyze` writes the same lines to stdout and to a
//! rotated file; the rotated files, oldest first, are the stdout lines exactly.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::BIN;

fn numbered(path: &Path, i: usize) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

#[test]
fn analyze_writes_every_event_once_across_the_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = support::capture(dir.path(), "faults");
    let path = dir.path().join("new/dir/events.ndjson");
    let max = 100 << 10;
    let out = Command::new(BIN)
        .arg("analyze")
        .arg(&pcap)
        .args(["--summary-period", "5", "--output", "stdout", "--output"])
        .arg(format!("file:{}?max_size={max}&keep=9", path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.len() > 3 * max,
        "several files' worth: {}",
        stdout.len()
    );

    let mut files: Vec<PathBuf> = (1..=9)
        .rev()
        .map(|i| numbered(&path, i))
        .filter(|p| p.exists())
        .collect();
    files.push(path.clone());
    assert!(files.len() >= 4, "rotated: {files:?}");
    assert!(!numbered(&path, 10).exists());
    let mut joined = String::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() <= max, "{f:?} is {} bytes", text.len());
        assert!(text.ends_with('\n'), "{f:?} ends with a whole line");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        joined += &text;
    }
    assert!(
        joined == stdout,
        "the files, oldest first, are the stdout lines"
    );
}

/// logrotate (Debian `logrotate`, installed by `cargo xtask bootstrap`), or None (after
/// saying so) outside CI.
fn logrotate() -> Option<PathBuf> {
    let bin = ["/usr/sbin/logrotate", "/sbin/logrotate"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if bin.is_none() {
        let msg = "logrotate is not installed (Debian: logrotate; `cargo xtask bootstrap`)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }
    bin
}

fn event(n: usize) -> hbwatch::event::Event {
    use hbwatch::event::{Event, Level, Observer};
    Event::new(
        "2026-11-22T10:00:05.536897Z".into(),
        Observer {
            hostname: "probe-7".into(),
            ingress: None,
        },
        hbwatch::event::Said {
            action: hbwatch::event::Action::PeerUp,
            level: Level::Info,
            message: format!("event {n}"),
        },
    )
}

/// `logrotate -f` with a configuration and a state file of its own for `path`.
fn rotate(bin: &Path, path: &Path, directives: &str) {
    let dir = path.parent().unwrap();
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 50\n  missingok\n  nocompress\n  {directives}\n}}\n",
            path.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `message` of every line of the rotated files, oldest first, then `path`; and the
/// number of lines in each file.
fn all_lines(path: &Path) -> (Vec<String>, Vec<usize>) {
    let mut files: Vec<PathBuf> = (1..=50)
        .map(|i| numbered(path, i))
        .filter(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    let mut lines = Vec::new();
    let mut counts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}: whole lines",
            f.display()
        );
        let before = lines.len();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l:?}", f.display()));
            lines.push(v["message"].as_str().unwrap().to_string());
        }
        counts.push(lines.len() - before);
    }
    (lines, counts)
}

/// logrotate's `create` mode three times while events are being written (1 per ms, a
/// flush every 10, like the agent's batches): the second rotation is followed by a
/// SIGHUP (`reopen`, what a `postrotate` kill -HUP does), the others are found by the
/// sink's once-a-second inode check. `cat events.ndjson.3 .2 .1 events.ndjson` is every
/// event once, in order, and each file got some.
#[test]
fn logrotate_create_while_writing_loses_and_repeats_nothing() {
    let Some(bin) = logrotate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let spec: hbwatch::sink::SinkSpec = format!("file:{}?max_size=0&max_age=0", path.display())
        .parse()
        .unwrap();
    let mut sink = hbwatch::sink::open(
        &spec,
        &hbwatch::sink::SinkContext::new("probe-7".into(), hbwatch::sink::stdout::Format::Json),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Held by the writer for each batch; the SIGHUP rotation takes it so that the
    // signal comes right after logrotate, before any more events (as in the agent,
    // whose loop handles SIGHUP between batches).
    let turn = std::sync::Arc::new(std::sync::Mutex::new(()));
    let (s, h, t) = (stop.clone(), hup.clone(), turn.clone());
    let writer = std::thread::spawn(move || {
        use std::sync::atomic::Ordering::Relaxed;
        let mut n = 0;
        let mut hup_at = None;
        while !s.load(Relaxed) {
            let batch = t.lock().unwrap();
            if h.swap(false, Relaxed) {
                sink.reopen();
                hup_at = Some(n);
            }
            for _ in 0..10 {
                sink.send(&event(n)).unwrap();
                n += 1;
            }
            sink.flush().unwrap();
            drop(batch);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sink.close(std::time::Duration::from_secs(1)).unwrap();
        (n, hup_at.unwrap(), sink.stats())
    });
    for i in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        if i == 1 {
            let _batch = turn.lock().unwrap();
            rotate(&bin, &path, "create 0640");
            hup.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            rotate(&bin, &path, "create 0640");
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, hup_at, stats) = writer.join().unwrap();

    let (lines, counts) = all_lines(&path);
    eprintln!("{n} events, lines per file (oldest first): {counts:?}");
    assert_eq!(counts.len(), 4, "three rotated files and the new one");
    assert!(
        counts.iter().all(|c| *c > 0),
        "every file got events (the sink followed each rotation): {counts:?}"
    );
    let want: Vec<String> = (0..n).map(|i| format!("event {i}")).collect();
    assert!(lines == want, "every event once, in order across the files");
    assert_eq!((stats.delivered, stats.dropped), (n as u64, 0));
    // SIGHUP switched at once: the file of the second rotation ends with the last
    // event written before it.
    let before_hup: usize = counts[..2].iter().sum();
    assert_eq!(before_hup, hup_at, "lines per file {counts:?}");
}

/// logrotate's `copytruncate`: the file is copied, then truncated under the open sink.
/// Between batches (copytruncate loses what is written between its copy and its
/// truncation, whoever writes), every event ends up once in the copies or the file, and
/// the file goes on from its start (no hole of zeros where the old end was).
#[test]
fn logrotate_copytruncate_keeps_every_event_once_and_leaves_no_hole() {
    let Some(bin) = logrotate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let spec: hbwatch::sink::SinkSpec = format!("file:{}?max_size=0&max_age=0", path.display())
        .parse()
        .unwrap();
    let mut sink = hbwatch::sink::open(
        &spec,
        &hbwatch::sink::SinkContext::new("probe-7".into(), hbwatch::sink::stdout::Format::Json),
    )
    .unwrap();
    let mut n = 0;
    for round in 0..3 {
        for _ in 0..200 {
            sink.send(&event(n)).unwrap();
            n += 1;
        }
        sink.flush().unwrap();
        rotate(&bin, &path, "copytruncate");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "round {round}");
        if round == 1 {
            // The sink notices the truncation at its next check.
            std::thread::sleep(hbwatch::sink::file::FOLLOW_EVERY);
        }
    }
    for _ in 0..200 {
        sink.send(&event(n)).unwrap();
        n += 1;
    }
    sink.close(std::time::Duration::from_secs(1)).unwrap();
    let text = std::fs::read(&path).unwrap();
    assert!(!text.contains(&0), "no hole of zeros in {}", path.display());
    let (lines, counts) = all_lines(&path);
    assert_eq!(counts, [200, 200, 200, 200]);
    let want: Vec<String> = (0..n).map(|i| format!("event {i}")).collect();
    assert!(lines == want, "every event once, in order across the files");
}
