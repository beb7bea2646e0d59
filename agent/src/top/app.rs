//! The interactive board: fetches a snapshot once per second, redraws, and handles
//! keys (sort, filters, scrolling, quit).

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

use super::board;
use super::model::{Snapshot, View};
use super::status::{Client, Shared};

/// What a key did to the board's state.
#[derive(Debug, Default)]
pub struct Keys {
    pub view: View,
    pub offset: usize,
    /// The `/` filter being typed.
    pub editing: Option<String>,
    pub quit: bool,
}

impl Keys {
    pub fn key(&mut self, code: KeyCode, snap: &Snapshot) {
        if let Some(t) = &mut self.editing {
            match code {
                KeyCode::Enter => {
                    self.view.text = std::mem::take(t);
                    self.editing = None;
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    t.pop();
                }
                KeyCode::Char(c) => t.push(c),
                _ => {}
            }
            return;
        }
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('s') => self.view.sort = self.view.sort.next(),
            KeyCode::Char('r') => self.view.descending = !self.view.descending,
            KeyCode::Char('p') => self.view.cycle_protocol(&snap.associations),
            KeyCode::Char('f') => self.view.cycle_state(),
            KeyCode::Char('/') => self.editing = Some(self.view.text.clone()),
            KeyCode::Esc => {
                self.view = View {
                    sort: self.view.sort,
                    descending: self.view.descending,
                    ..View::default()
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.offset = self.offset.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.offset = self.offset.saturating_sub(1),
            KeyCode::PageDown => self.offset = self.offset.saturating_add(20),
            KeyCode::PageUp => self.offset = self.offset.saturating_sub(20),
            KeyCode::Home => self.offset = 0,
            KeyCode::Char(c @ '1'..='7') => {
                let i = c as usize - '1' as usize;
                self.view.sort = super::model::SortKey::ALL[i];
            }
            _ => {}
        }
    }
}

/// `hbwatch top`: the board of the agent serving `socket`, until `q`.
pub fn run(socket: &Path) -> anyhow::Result<()> {
    let mut client = Client::connect(socket)?;
    client.fetch()?;
    show(|| client.fetch().map(Arc::new), &AtomicBool::new(false))
}

/// The board until `q`, with the snapshot `fetch` gives once per second. Once `ended`
/// turns true (the agent stopped), the last snapshot stays on screen until `q`.
pub fn show(
    mut fetch: impl FnMut() -> anyhow::Result<Arc<Snapshot>>,
    ended: &AtomicBool,
) -> anyhow::Result<()> {
    let mut snap = fetch()?;
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut keys = Keys::default();
        let mut next = Instant::now() + Duration::from_secs(1);
        let mut stopped = false;
        loop {
            terminal.draw(|f| {
                board::draw(f, &snap, &keys.view, keys.offset, keys.editing.as_deref());
                if stopped {
                    board::stopped_note(f);
                }
            })?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let TermEvent::Key(k) = event::read()? {
                    // Raw mode turns Ctrl-C into a key: it quits, as q does.
                    let ctrl_c = k.code == KeyCode::Char('c')
                        && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c {
                        keys.quit = true;
                    } else if k.kind == KeyEventKind::Press {
                        keys.key(k.code, &snap);
                    }
                }
                if keys.quit {
                    return Ok(());
                }
            }
            if Instant::now() >= next && !stopped {
                stopped = ended.load(Ordering::Relaxed);
                snap = fetch()?;
                next = Instant::now() + Duration::from_secs(1);
            }
        }
    })();
    ratatui::restore();
    result
}

/// The board on its own thread over the agent running in this process (`run --tui`,
/// `demo` on a terminal). Log lines are held while it is up and written after.
pub struct Attached {
    ended: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// Shows `shared` until `q`; `on_quit` runs if `q` comes while the agent still runs
/// (it should stop the agent, e.g. with SIGINT to this process).
pub fn attach(shared: Shared, on_quit: impl FnOnce() + Send + 'static) -> Attached {
    hold_logs(true);
    let ended = Arc::new(AtomicBool::new(false));
    let e = ended.clone();
    let thread = std::thread::spawn(move || {
        let fetch = || Ok(shared.lock().map(|s| s.clone()).unwrap_or_default());
        let result = show(fetch, &e);
        if !e.load(Ordering::Relaxed) {
            on_quit();
        }
        result
    });
    Attached { ended, thread }
}

impl Attached {
    /// The agent has stopped: waits for the user's `q`, then writes the held logs.
    pub fn finish(self) -> anyhow::Result<()> {
        self.ended.store(true, Ordering::Relaxed);
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the board panicked")));
        hold_logs(false);
        result
    }
}

/// Sends SIGINT to this process: the agent's own clean stop.
pub fn interrupt_self() {
    // SAFETY: signalling our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
}

/// Log lines held while a board owns the terminal (at most this many bytes; later
/// ones are counted and said to be dropped).
const HELD_LOGS_MAX: usize = 1 << 20;

static HELD_LOGS: Mutex<Option<(Vec<u8>, usize)>> = Mutex::new(None);

fn hold_logs(on: bool) {
    let Ok(mut held) = HELD_LOGS.lock() else {
        return;
    };
    if on {
        held.get_or_insert_with(Default::default);
    } else if let Some((buf, dropped)) = held.take() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&buf);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "({dropped} bytes of log dropped while the board was up)"
            );
        }
    }
}

/// The log writer (`tracing_subscriber::fmt().with_writer(top::app::log_writer)`):
/// stderr, or the held buffer while a board is on the terminal.
pub fn log_writer() -> LogWriter {
    LogWriter
}

pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut held) = HELD_LOGS.lock() {
            if let Some((buf, dropped)) = held.as_mut() {
                if buf.len() + b.len() <= HELD_LOGS_MAX {
                    buf.extend_from_slice(b);
                } else {
                    *dropped += b.len();
                }
                return Ok(b.len());
            }
        }
        std::io::stderr().write(b)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{SortKey, State};

    #[test]
    fn keys_sort_filter_and_quit() {
        let snap = Snapshot::default();
        let mut k = Keys::default();
        k.key(KeyCode::Char('s'), &snap);
        assert_eq!(k.view.sort, SortKey::Endpoints);
        k.key(KeyCode::Char('3'), &snap);
        assert_eq!(k.view.sort, SortKey::State);
        k.key(KeyCode::Char('f'), &snap);
        assert_eq!(k.view.state, Some(State::Up));
        k.key(KeyCode::Char('/'), &snap);
        for c in "sccp".chars() {
            k.key(KeyCode::Char(c), &snap);
        }
        assert!(!k.quit, "q while typing is text");
        k.key(KeyCode::Enter, &snap);
        assert_eq!(k.view.text, "sccp");
        k.key(KeyCode::Esc, &snap);
        assert_eq!(k.view.text, "");
        assert_eq!(k.view.state, None);
        k.key(KeyCode::Char('q'), &snap);
        assert!(k.quit);
    }
}
