//! `file:PATH[?max_size=100MiB&max_age=1d&keep=5]`: NDJSON lines appended to a file,
//! rotated by size and by age.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `max_size` | `100MiB` | rotate before a line would take the file past this size (`0`: never by size) |
//! | `max_age` | `1d` | rotate before writing to a file older than this (`0`: never by age) |
//! | `keep` | `5` | rotated files kept: `PATH.1` (newest) ... `PATH.keep` (oldest); `0` keeps none |
//!
//! - `PATH` may be relative; `file:///abs/path` works too. Parent directories are created.
//!   An existing file is appended to (its age counts from its creation time where the
//!   file system records one, else from when the agent opened it).
//! - New files get mode 0640 (whatever the umask); an existing file keeps its mode.
//! - Rotation happens between lines, never inside one: a line longer than `max_size` is
//!   written alone into a fresh file. It renames `PATH.i` to `PATH.i+1` (the oldest is
//!   removed), `PATH` to `PATH.1`, and opens a new `PATH`. An idle agent rotates at its
//!   next line, so no empty files appear.
//! - Lines are buffered (64 KiB) and written on `flush()` (the agent flushes after each
//!   batch of events) and when the buffer fills; the file is fsynced on rotation and on
//!   close.
//! - A failed write (disk full, file system gone) drops the lines it held: they are counted
//!   in `dropped` (and so reported as `agent.events_lost`), the partial line it may have
//!   left is cut off again, and the next write tries again (reopening the file if needed).
//! - External rotation (logrotate): at an event, at most once a second, the sink
//!   compares `PATH`'s device and inode with the open file's. When `PATH` was renamed
//!   away or removed (logrotate's `create`, `nocreate`) it opens `PATH` again, creating it
//!   if needed; lines written in between went to the renamed file, so none is lost or
//!   written twice. When the open file became shorter than what was written to it
//!   (`copytruncate`) it goes on at the new end (the file is opened with `O_APPEND`, so
//!   there is no hole) and counts size and age from there. `reopen()` (the agent calls it
//!   on SIGHUP, logrotate's `postrotate`) writes out the buffer and opens `PATH` at once.
//!   Set `max_size=0&max_age=0` when logrotate does the rotating.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{parse_duration, parse_size, query_pairs};
use crate::event::Event;
use crate::sink::{Sink, SinkStats};

const KNOWN: &[&str] = &["max_size", "max_age", "keep"];
/// Buffered bytes written out without waiting for `flush()`.
const BUF_LIMIT: usize = 64 << 10;
/// More rotated files than this is surely a typo.
const MAX_KEEP: usize = 1000;
const MODE: u32 = 0o640;
/// How often `PATH` is compared with the open file (external rotation).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    pub path: PathBuf,
    /// Bytes; 0: no rotation by size.
    pub max_size: u64,
    /// Zero: no rotation by age.
    pub max_age: Duration,
    /// Rotated files kept.
    pub keep: usize,
}

impl FileOptions {
    /// `PATH[?options]` (what follows `file:`).
    pub fn parse(spec: &str) -> Result<FileOptions, String> {
        let (path, query) = match spec.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (spec, None),
        };
        // `file:///var/log/x` (a file URL): the part after `//` up to `/` is the host.
        let path = match path.strip_prefix("//") {
            Some(rest) => {
                let slash = rest.find('/').unwrap_or(rest.len());
                let host = &rest[..slash];
                if !host.is_empty() && host != "localhost" {
                    return Err(format!(
                        "file URL with host {host:?}: only local files (file:/path, file:///path)"
                    ));
                }
                &rest[slash..]
            }
            None => path,
        };
        if path.is_empty() {
            return Err("no path (file:/var/log/hbwatch.ndjson)".into());
        }
        if path.ends_with('/') {
            return Err(format!("{path:?} is a directory; name the file"));
        }
        let mut opts = FileOptions {
            path: PathBuf::from(path),
            max_size: 100 << 20,
            max_age: Duration::from_secs(86_400),
            keep: 5,
        };
        let pairs = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()));
        let mut seen = Vec::new();
        for (k, v) in query_pairs(pairs, KNOWN)? {
            if seen.contains(&k) {
                return Err(format!("option {k:?} given twice"));
            }
            let bad = |e: String| format!("{k}: {e}");
            match k.as_str() {
                "max_size" => opts.max_size = parse_size(&v).map_err(bad)?,
                "max_age" => opts.max_age = parse_duration(&v).map_err(bad)?,
                "keep" => {
                    opts.keep = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_KEEP)
                        .ok_or_else(|| {
                            format!("keep: {v:?} is not a number of files (0 to {MAX_KEEP})")
                        })?
                }
                _ => unreachable!("query_pairs checked the key"),
            }
            seen.push(k);
        }
        Ok(opts)
    }
}

pub fn open(opts: &FileOptions) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(Box::new(FileSink::open(opts.clone())?))
}

/// What the sink takes the time from (tests move it on).
pub type Clock = Box<dyn Fn() -> SystemTime + Send>;

/// NDJSON lines to a rotated file.
pub struct FileSink {
    opts: FileOptions,
    /// `None` after a failed (re)open: the next write tries again.
    file: Option<File>,
    /// Device and inode of `file`, to see `PATH` renamed away or replaced.
    ident: (u64, u64),
    /// When `PATH` was last compared with the open file.
    followed: SystemTime,
    /// Bytes of the current file (what is on disk, not what is buffered).
    size: u64,
    /// When the current file was started.
    born: SystemTime,
    buf: Vec<u8>,
    /// Lines in `buf`.
    buf_lines: u64,
    /// The line being formatted.
    line: Vec<u8>,
    delivered: u64,
    dropped: u64,
    /// In a run of failures: logged once, and once more when it ends.
    failing: bool,
    clock: Clock,
}

impl FileSink {
    pub fn open(opts: FileOptions) -> anyhow::Result<FileSink> {
        FileSink::with_clock(opts, Box::new(SystemTime::now))
    }

    pub fn with_clock(opts: FileOptions, clock: Clock) -> anyhow::Result<FileSink> {
        let (file, size, born) = open_file(&opts.path, &clock)
            .map_err(|e| anyhow::anyhow!("file:{}: {e}", opts.path.display()))?;
        let ident = identity(&file);
        let followed = clock();
        Ok(FileSink {
            opts,
            file: Some(file),
            ident,
            followed,
            size,
            born,
            buf: Vec::with_capacity(BUF_LIMIT + 4096),
            buf_lines: 0,
            line: Vec::with_capacity(1024),
            delivered: 0,
            dropped: 0,
            failing: false,
            clock,
        })
    }

    fn due(&self, line_len: u64) -> bool {
        let pending = self.size + self.buf.len() as u64;
        if pending == 0 {
            return false;
        }
        let by_size = self.opts.max_size > 0 && pending + line_len > self.opts.max_size;
        let by_age = !self.opts.max_age.is_zero()
            && (self.clock)()
                .duration_since(self.born)
                .is_ok_and(|age| age >= self.opts.max_age);
        by_size || by_age
    }

    /// Writes the buffered lines; on failure they count as dropped.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.buf_lines);
        if self.file.is_none() {
            if let Err(e) = self.open_path() {
                self.fail(lines, &format!("cannot open: {e}"));
                return;
            }
        }
        let file = self.file.as_mut().expect("opened above");
        match file.write_all(&self.buf) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.delivered += lines;
                if self.failing {
                    self.failing = false;
                    info!("file:{}: writing again", self.opts.path.display());
                }
                self.buf.clear();
            }
            Err(e) => {
                // A short write may have left part of a line: cut the file back to whole
                // lines so that what follows starts on a line of its own.
                if file.set_len(self.size).is_err() {
                    self.file = None;
                }
                self.fail(lines, &format!("write failed: {e}"));
            }
        }
    }

    fn fail(&mut self, lines: u64, why: &str) {
        self.dropped += lines;
        self.buf.clear();
        if !self.failing {
            self.failing = true;
            warn!(
                "file:{}: {why}; {lines} events dropped (further drops are counted, not logged)",
                self.opts.path.display()
            );
        }
    }

    fn rotate(&mut self) {
        self.write_out();
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        if let Err(e) = shift(&self.opts.path, self.opts.keep) {
            warn!("file:{}: rotation failed: {e}", self.opts.path.display());
        }
        if let Err(e) = self.open_path() {
            // Written lines wait in the buffer; the next write out tries again.
            warn!("file:{}: cannot open: {e}", self.opts.path.display());
            self.size = 0;
            self.born = (self.clock)();
        }
    }

    /// External rotation, looked for at most every [`FOLLOW_EVERY`]: `PATH` renamed away,
    /// removed or replaced (a new inode) is opened again; a file truncated under the sink
    /// (`copytruncate`) is written on at its new end.
    fn follow(&mut self) {
        let now = (self.clock)();
        let due = now
            .duration_since(self.followed)
            .map_or(true, |d| d >= FOLLOW_EVERY);
        if !due {
            return;
        }
        self.followed = now;
        let Some(file) = &self.file else {
            return; // write_out opens it
        };
        let shown = self.opts.path.display().to_string();
        match std::fs::metadata(&self.opts.path) {
            Ok(m) if (m.dev(), m.ino()) == self.ident => {
                let len = file.metadata().map_or(self.size, |m| m.len());
                if len < self.size {
                    info!(
                        "file:{shown}: truncated from {} to {len} bytes (copytruncate): \
                         writing on at its end",
                        self.size
                    );
                    self.size = len;
                    self.born = now;
                }
            }
            found => {
                let why = if found.is_ok() {
                    "replaced by another file"
                } else {
                    "moved away or removed"
                };
                info!("file:{shown}: {why} (log rotation): opening it again");
                self.file = None;
                if let Err(e) = self.open_path() {
                    // write_out counts the lines as dropped and tries again next time.
                    warn!("file:{shown}: cannot open: {e}");
                }
            }
        }
    }

    /// Opens `PATH` (again) and takes its size and age from it.
    fn open_path(&mut self) -> std::io::Result<()> {
        let (f, size, born) = open_file(&self.opts.path, &self.clock)?;
        self.ident = identity(&f);
        self.file = Some(f);
        self.size = size;
        self.born = born;
        Ok(())
    }
}

/// Device and inode of an open file ((0, 0) if it cannot be read: the next comparison
/// then reopens `PATH`, which is harmless).
fn identity(f: &File) -> (u64, u64) {
    f.metadata().map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// `PATH.keep` removed, `PATH.i` -> `PATH.i+1`, `PATH` -> `PATH.1` (removed if keep is 0).
fn shift(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |i: usize| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    };
    let ignore_missing = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    ignore_missing(std::fs::remove_file(numbered(keep)))?;
    for i in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(i), numbered(i + 1)))?;
    }
    ignore_missing(std::fs::rename(path, numbered(1)))
}

/// Opens `path` for appending (creating it and its directories): the file, its size and
/// when it was started.
fn open_file(path: &Path, clock: &Clock) -> std::io::Result<(File, u64, SystemTime)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .open(path)?;
    let meta = file.metadata()?;
    if !existed {
        // The umask may have taken bits off.
        file.set_permissions(std::fs::Permissions::from_mode(MODE))?;
    }
    let born = if existed && meta.len() > 0 {
        meta.created().unwrap_or_else(|_| clock())
    } else {
        clock()
    };
    Ok((file, meta.len(), born))
}

impl Sink for FileSink {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.line.clear();
        ev.write_line(&mut self.line);
        // Before the size and age are looked at: a truncated file starts them again.
        self.follow();
        if self.due(self.line.len() as u64) {
            self.rotate();
        }
        self.buf.extend_from_slice(&self.line);
        self.buf_lines += 1;
        if self.buf.len() >= BUF_LIMIT {
            self.write_out();
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out();
        Ok(())
    }

    /// SIGHUP (logrotate's `postrotate`): what is buffered goes to the file open now,
    /// then `PATH` is opened again, whatever it is.
    fn reopen(&mut self) {
        self.write_out();
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        self.followed = (self.clock)();
        match self.open_path() {
            Ok(()) => info!("file:{}: reopened (SIGHUP)", self.opts.path.display()),
            Err(e) => warn!("file:{}: cannot open: {e}", self.opts.path.display()),
        }
    }

    fn close(&mut self, _timeout: Duration) -> anyhow::Result<()> {
        self.write_out();
        if let Some(f) = &self.file {
            if let Err(e) = f.sync_all() {
                warn!("file:{}: fsync failed: {e}", self.opts.path.display());
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("file:{}", self.opts.path.display())
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.delivered,
            dropped: self.dropped,
            queued: self.buf_lines,
            ..SinkStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::event::{Level, Observer, Said};

    fn ev(n: usize) -> Event {
        Event::new(
            "2026-11-22T10:00:00.000000Z".into(),
            Observer {
                hostname: "h".into(),
                ingress: None,
            },
            Said {
                action: crate::event::Action::PeerUp,
                level: Level::Info,
                message: format!("event {n:04}"),
            },
        )
    }

    fn line_len() -> u64 {
        ev(0).to_line().len() as u64
    }

    fn opts(path: &Path, query: &str) -> FileOptions {
        FileOptions::parse(&format!("{}?{query}", path.display())).unwrap()
    }

    fn read(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON lines");
                v["message"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn numbered(path: &Path, i: usize) -> PathBuf {
        PathBuf::from(format!("{}.{i}", path.display()))
    }

    #[test]
    fn options_parse_with_defaults_and_errors_say_what_is_wrong() {
        let o = FileOptions::parse("/var/log/hbwatch.ndjson").unwrap();
        assert_eq!(o.path, PathBuf::from("/var/log/hbwatch.ndjson"));
        assert_eq!(
            (o.max_size, o.max_age, o.keep),
            (100 << 20, Duration::from_secs(86_400), 5)
        );
        let o = FileOptions::parse("///tmp/x.ndjson?max_size=0&max_age=0&keep=0").unwrap();
        assert_eq!(o.path, PathBuf::from("/tmp/x.ndjson"));
        assert_eq!((o.max_size, o.max_age, o.keep), (0, Duration::ZERO, 0));
        let o = FileOptions::parse("rel/x?max_size=1MiB&max_age=2h&keep=12").unwrap();
        assert_eq!(o.path, PathBuf::from("rel/x"));
        assert_eq!(
            (o.max_size, o.max_age, o.keep),
            (1 << 20, Duration::from_secs(7200), 12)
        );

        let err = |s: &str| FileOptions::parse(s).unwrap_err();
        assert!(
            err("/x?maxsize=1").contains("unknown option \"maxsize\""),
            "{}",
            err("/x?maxsize=1")
        );
        assert!(err("/x?max_size=lots").contains("max_size"));
        assert!(err("/x?max_age=1y").contains("max_age"));
        assert!(err("/x?keep=-1").contains("keep"));
        assert!(err("/x?keep=5000").contains("0 to 1000"));
        assert!(err("/x?keep=1&keep=2").contains("twice"));
        assert!(err("").contains("no path"));
        assert!(err("?keep=1").contains("no path"));
        assert!(err("/var/log/").contains("directory"));
        assert!(err("//remote/x").contains("only local files"));
        // Through the --output parser, with the URL in the message.
        let e = "file:/x?nope=1"
            .parse::<crate::sink::SinkSpec>()
            .unwrap_err();
        assert!(
            e.to_string().contains("file:/x?nope=1") && e.to_string().contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn rotates_by_size_between_lines_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/events.ndjson");
        // Three lines fit, the fourth goes to a new file.
        let max = 3 * line_len() + line_len() / 2;
        let mut sink =
            FileSink::open(opts(&path, &format!("max_size={max}&keep=2&max_age=0"))).unwrap();
        for n in 0..10 {
            sink.send(&ev(n)).unwrap();
        }
        sink.close(Duration::ZERO).unwrap();
        assert_eq!(read(&path), ["event 0009"]);
        assert_eq!(
            read(&numbered(&path, 1)),
            ["event 0006", "event 0007", "event 0008"]
        );
        assert_eq!(
            read(&numbered(&path, 2)),
            ["event 0003", "event 0004", "event 0005"]
        );
        assert!(
            !numbered(&path, 3).exists(),
            "keep=2: the oldest is removed"
        );
        for p in [path.clone(), numbered(&path, 1)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= max);
        }
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.queued), (10, 0, 0));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn a_line_longer_than_max_size_is_written_whole_in_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let mut sink = FileSink::open(opts(&path, "max_size=10&keep=3")).unwrap();
        for n in 0..3 {
            sink.send(&ev(n)).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(read(&path), ["event 0002"]);
        assert_eq!(read(&numbered(&path, 1)), ["event 0001"]);
        assert_eq!(read(&numbered(&path, 2)), ["event 0000"]);
    }

    #[test]
    fn rotates_by_age_and_keep_zero_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        let secs = Arc::new(AtomicU64::new(0));
        let clock_secs = secs.clone();
        let clock: Clock =
            Box::new(move || t0 + Duration::from_secs(clock_secs.load(Ordering::Relaxed)));
        let mut sink =
            FileSink::with_clock(opts(&path, "max_age=1h&max_size=0&keep=3"), clock).unwrap();
        sink.send(&ev(0)).unwrap();
        secs.store(3599, Ordering::Relaxed);
        sink.send(&ev(1)).unwrap();
        secs.store(3600, Ordering::Relaxed);
        sink.send(&ev(2)).unwrap(); // the file is an hour old: a new one
        secs.store(3600 + 1800, Ordering::Relaxed);
        sink.send(&ev(3)).unwrap();
        secs.store(3 * 3600, Ordering::Relaxed);
        // Idle for long: rotates at the next line only, no empty files in between.
        sink.send(&ev(4)).unwrap();
        sink.close(Duration::ZERO).unwrap();
        assert_eq!(read(&path), ["event 0004"]);
        assert_eq!(read(&numbered(&path, 1)), ["event 0002", "event 0003"]);
        assert_eq!(read(&numbered(&path, 2)), ["event 0000", "event 0001"]);
        assert!(!numbered(&path, 3).exists());

        let path = dir.path().join("k0.ndjson");
        let mut sink = FileSink::open(opts(&path, "max_size=10&keep=0")).unwrap();
        for n in 0..3 {
            sink.send(&ev(n)).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(read(&path), ["event 0002"]);
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        std::fs::write(&path, ev(100).to_line().repeat(2)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let max = 3 * line_len();
        let mut sink = FileSink::open(opts(&path, &format!("max_size={max}"))).unwrap();
        sink.send(&ev(0)).unwrap();
        sink.send(&ev(1)).unwrap();
        sink.flush().unwrap();
        assert_eq!(
            read(&numbered(&path, 1)),
            ["event 0100", "event 0100", "event 0000"]
        );
        assert_eq!(read(&path), ["event 0001"]);
        let mode = std::fs::metadata(numbered(&path, 1))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "an existing file keeps its mode");
    }

    /// A sink on a clock the test moves on (seconds since an hour).
    fn clocked(path: &Path, query: &str) -> (FileSink, Arc<AtomicU64>) {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        let secs = Arc::new(AtomicU64::new(0));
        let s = secs.clone();
        let clock: Clock = Box::new(move || t0 + Duration::from_secs(s.load(Ordering::Relaxed)));
        (
            FileSink::with_clock(opts(path, query), clock).unwrap(),
            secs,
        )
    }

    #[test]
    fn follows_a_file_renamed_away_within_a_second_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let (mut sink, secs) = clocked(&path, "max_size=0&max_age=0");
        sink.send(&ev(0)).unwrap();
        sink.flush().unwrap();
        // logrotate's `create`: renamed, and a new empty file in its place.
        std::fs::rename(&path, numbered(&path, 1)).unwrap();
        std::fs::write(&path, b"").unwrap();
        // Within the second: still the renamed file (no stat per event).
        sink.send(&ev(1)).unwrap();
        sink.flush().unwrap();
        secs.store(1, Ordering::Relaxed);
        sink.send(&ev(2)).unwrap();
        sink.flush().unwrap();
        // `nocreate`: removed and not replaced; the sink creates it.
        std::fs::rename(&path, numbered(&path, 2)).unwrap();
        secs.store(2, Ordering::Relaxed);
        sink.send(&ev(3)).unwrap();
        sink.close(Duration::ZERO).unwrap();
        assert_eq!(read(&numbered(&path, 1)), ["event 0000", "event 0001"]);
        assert_eq!(read(&numbered(&path, 2)), ["event 0002"]);
        assert_eq!(read(&path), ["event 0003"]);
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped), (4, 0));
    }

    #[test]
    fn a_truncated_file_is_written_on_at_its_new_end_with_size_counted_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        // Three lines fit in a file.
        let max = 3 * line_len() + line_len() / 2;
        let (mut sink, secs) = clocked(&path, &format!("max_size={max}&max_age=0&keep=3"));
        sink.send(&ev(0)).unwrap();
        sink.send(&ev(1)).unwrap();
        sink.flush().unwrap();
        // logrotate's `copytruncate`.
        std::fs::copy(&path, numbered(&path, 1)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        secs.store(1, Ordering::Relaxed);
        for n in 2..5 {
            sink.send(&ev(n)).unwrap();
        }
        sink.close(Duration::ZERO).unwrap();
        // From offset 0 (no hole of zeros), and three lines before the sink's own
        // rotation would start a new file: the size was taken from the truncated file.
        let text = std::fs::read(&path).unwrap();
        assert!(!text.contains(&0), "no hole");
        assert_eq!(read(&path), ["event 0002", "event 0003", "event 0004"]);
        assert_eq!(read(&numbered(&path, 1)), ["event 0000", "event 0001"]);
    }

    #[test]
    fn reopen_writes_out_then_opens_the_path_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let (mut sink, _secs) = clocked(&path, "max_size=0&max_age=0");
        sink.send(&ev(0)).unwrap();
        sink.flush().unwrap();
        std::fs::rename(&path, numbered(&path, 1)).unwrap();
        sink.send(&ev(1)).unwrap(); // buffered: goes to the file open now
        Sink::reopen(&mut sink); // SIGHUP, no second needed
        sink.send(&ev(2)).unwrap();
        sink.close(Duration::ZERO).unwrap();
        assert_eq!(read(&numbered(&path, 1)), ["event 0000", "event 0001"]);
        assert_eq!(read(&path), ["event 0002"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn write_errors_count_as_drops_and_writing_resumes() {
        // /dev/full: every write fails with ENOSPC, like a full disk.
        if !Path::new("/dev/full").exists() {
            eprintln!("SKIPPED: no /dev/full");
            return;
        }
        let mut sink =
            FileSink::open(opts(Path::new("/dev/full"), "max_size=0&max_age=0")).unwrap();
        for n in 0..5 {
            sink.send(&ev(n)).unwrap();
        }
        sink.flush().unwrap();
        sink.send(&ev(5)).unwrap();
        sink.close(Duration::ZERO).unwrap();
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.queued), (0, 6, 0));

        // A file whose directory disappears: drops while it is gone, writes once it is back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/e.ndjson");
        let mut sink = FileSink::open(opts(&path, "max_size=10&keep=1")).unwrap();
        sink.send(&ev(0)).unwrap();
        sink.flush().unwrap();
        std::fs::remove_dir_all(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d"), b"not a directory").unwrap();
        sink.send(&ev(1)).unwrap(); // rotation cannot reopen
        sink.flush().unwrap();
        assert_eq!(sink.stats().dropped, 1);
        std::fs::remove_file(dir.path().join("d")).unwrap();
        sink.send(&ev(2)).unwrap();
        sink.flush().unwrap();
        assert_eq!(read(&path), ["event 0002"]);
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped), (2, 1));
    }
}
