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
