//! The interactive board: fetches a snapshot once per second, redraws, and handles
//! keys (sort, filters, scrolling, quit).

use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind};

use super::board;
use super::model::{Snapshot, View};
use super::status::Client;

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
    let mut snap = client.fetch()?;
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut keys = Keys::default();
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            terminal.draw(|f| {
                board::draw(f, &snap, &keys.view, keys.offset, keys.editing.as_deref())
            })?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let TermEvent::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press {
                        keys.key(k.code, &snap);
                    }
                }
                if keys.quit {
                    return Ok(());
                }
            }
            if Instant::now() >= next {
                snap = client.fetch()?;
                next = Instant::now() + Duration::from_secs(1);
            }
        }
    })();
    ratatui::restore();
    result
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
