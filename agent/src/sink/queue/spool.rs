//! The on-disk spool of one batching output (Loki, OTLP): batches the receiver has not
//! acknowledged yet, one file each, oldest first, bounded in bytes.
//!
//! A file is named `<seq>-<events><suffix>` (`seq` 20 digits, so names sort in delivery
//! order; the suffix is the output's: `.pb.snappy` for Loki, `.pb` for OTLP) and holds the
//! exact body of one protobuf push (a snappy-compressed `logproto.PushRequest`, an
//! `ExportLogsServiceRequest`), which an operator can replay by hand with
//! `curl -H 'Content-Type: application/x-protobuf' --data-binary @FILE URL`.
//! Files are written under a temporary name and renamed, so a crash never leaves half a
//! batch; they are not fsynced one by one (the spool outlives receiver outages and agent
//! restarts, not a power cut in the same second). A lock file keeps a second agent with
//! the same output from sharing the directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolFile {
    pub events: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// File name ending of the batches (`.pb.snappy`, `.pb`).
    suffix: &'static str,
    max: u64,
    bytes: u64,
    events: u64,
    files: BTreeMap<u64, SpoolFile>,
    /// Held (flock) until [`Spool::unlock`] or drop.
    lock: Option<File>,
}

impl Spool {
    /// Opens (creates) `dir`, takes its lock and indexes the batches left by an earlier run.
    pub fn open(dir: &Path, max: u64, suffix: &'static str) -> Result<Spool, String> {
        let ctx = |e: io::Error| format!("spool directory {}: {e}", dir.display());
        fs::create_dir_all(dir).map_err(ctx)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(ctx)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "spool directory {} is in use by another hbwatch with the same output ({})",
                dir.display(),
                io::Error::last_os_error()
            ));
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            suffix,
            max,
            bytes: 0,
            events: 0,
            files: BTreeMap::new(),
            lock: Some(lock),
        };
        for entry in fs::read_dir(dir).map_err(ctx)? {
            let entry = entry.map_err(ctx)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A write cut short by a crash: the batch was still in memory then.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, events)) = parse_name(&name, suffix) else {
                continue;
            };
            let bytes = entry.metadata().map_err(ctx)?.len();
            spool.files.insert(seq, SpoolFile { events, bytes });
            spool.bytes += bytes;
            spool.events += events;
        }
        Ok(spool)
    }

    /// Lets another agent take the directory (this one writes no more).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence number for the next batch: after every spooled one.
    pub fn next_seq(&self) -> u64 {
        self.files.keys().next_back().map_or(0, |s| s + 1)
    }

    /// The oldest spooled batch.
    pub fn first(&self) -> Option<(u64, SpoolFile)> {
        self.files.iter().next().map(|(s, f)| (*s, *f))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn has_room(&self, bytes: u64) -> bool {
        self.bytes.saturating_add(bytes) <= self.max
    }

    pub fn path(&self, seq: u64, events: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}-{events}{}", self.suffix))
    }

    /// Stores a batch if it fits under the bound: `Ok(false)` when it does not.
    pub fn write(&mut self, seq: u64, events: u64, body: &[u8]) -> io::Result<bool> {
        let bytes = body.len() as u64;
        if !self.has_room(bytes) {
            return Ok(false);
        }
        let path = self.path(seq, events);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, body)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(old) = self.files.insert(seq, SpoolFile { events, bytes }) {
            self.bytes -= old.bytes;
            self.events -= old.events;
        }
        self.bytes += bytes;
        self.events += events;
        Ok(true)
    }

    pub fn read(&self, seq: u64) -> io::Result<Vec<u8>> {
        let f = self.files.get(&seq).ok_or(io::ErrorKind::NotFound)?;
        fs::read(self.path(seq, f.events))
    }

    /// Forgets a batch (delivered, or rejected for good).
    pub fn remove(&mut self, seq: u64) -> io::Result<()> {
        let Some(f) = self.files.remove(&seq) else {
            return Ok(());
        };
        self.bytes -= f.bytes;
        self.events -= f.events;
        match fs::remove_file(self.path(seq, f.events)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Spooled batches in `dir`, without opening it (no lock, no index).
pub fn batches_in(dir: &Path, suffix: &str) -> usize {
    fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| parse_name(&e.file_name().to_string_lossy(), suffix).is_some())
            .count()
    })
}

fn parse_name(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let (seq, events) = name.strip_suffix(suffix)?.split_once('-')?;
    if seq.len() != 20 {
        return None;
    }
    Some((seq.parse().ok()?, events.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hbwatch-spool-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn bounded_ordered_and_reopened() {
        let dir = tmpdir("bound");
        let mut s = Spool::open(&dir, 250, ".pb.snappy").unwrap();
        assert_eq!(s.next_seq(), 0);
        assert!(s.write(7, 3, &[1; 100]).unwrap());
        assert!(s.write(5, 2, &[2; 100]).unwrap());
        // 200 of 250 bytes used: 60 more would exceed the bound, 50 fit exactly.
        assert!(!s.write(9, 1, &[3; 60]).unwrap());
        assert!(s.write(9, 1, &[3; 50]).unwrap());
        assert!(!s.write(10, 1, &[4; 1]).unwrap());
        assert_eq!((s.bytes(), s.events(), s.len()), (250, 6, 3));
        assert_eq!(
            s.first(),
            Some((
                5,
                SpoolFile {
                    events: 2,
                    bytes: 100
                }
            ))
        );
        assert_eq!(s.read(5).unwrap(), vec![2; 100]);
        assert_eq!(s.next_seq(), 10);

        // A second agent with the same output cannot take the directory.
        let e = Spool::open(&dir, 250, ".pb.snappy").unwrap_err();
        assert!(e.contains("in use"), "{e}");

        s.remove(5).unwrap();
        assert_eq!((s.bytes(), s.events()), (150, 4));
        fs::write(dir.join("00000000000000000011-4.tmp"), b"half").unwrap();
        fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        drop(s);

        assert_eq!(batches_in(&dir, ".pb.snappy"), 2);
        let s = Spool::open(&dir, 250, ".pb.snappy").unwrap();
        assert_eq!((s.bytes(), s.events(), s.len()), (150, 4, 2));
        assert_eq!(s.first().map(|f| f.0), Some(7));
        assert_eq!(s.next_seq(), 10);
        assert!(!dir.join("00000000000000000011-4.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
