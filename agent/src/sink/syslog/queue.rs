//! The bounded queue between `send` (the agent's thread) and a sink's sender thread, with
//! the delivery counters and the close handshake.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Queue {
    state: Mutex<State>,
    /// The sender thread waits here for frames (or for the stop).
    wake: Condvar,
    /// `close` waits here for the queue to empty.
    progress: Condvar,
    delivered: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    /// A handle on the sender's socket, shut down to free a sender blocked on the peer.
    socket: Mutex<Option<TcpStream>>,
}

struct State {
    frames: VecDeque<Vec<u8>>,
    cap: usize,
    /// Frames the sender took and has not settled yet (in a write, waiting for the
    /// peer's acknowledgement).
    held: usize,
    /// Given up: what was left has been counted as dropped; the sender exits.
    stop: bool,
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                cap,
                held: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            socket: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame; `false` (and counted as dropped) when the queue is full or closed.
    pub fn push(&self, frame: Vec<u8>) -> bool {
        let mut st = self.lock();
        if st.stop || st.frames.len() + st.held >= st.cap {
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        st.frames.push_back(frame);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Sender: moves frames (at least one, up to about `max_bytes`) into `out`, waiting up
    /// to `wait` for one to come (`None`: until one comes). `false` once stopped.
    pub fn take(&self, out: &mut Vec<Vec<u8>>, max_bytes: usize, wait: Option<Duration>) -> bool {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut st = self.lock();
        while st.frames.is_empty() && !st.stop {
            st = match deadline {
                None => self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => match self.wait_until(st, d) {
                    Some(st) => st,
                    None => return true,
                },
            };
        }
        if st.stop {
            return false;
        }
        let mut bytes = 0;
        while let Some(f) = st.frames.front() {
            if !out.is_empty() && bytes + f.len() > max_bytes {
                break;
            }
            bytes += f.len();
            out.push(st.frames.pop_front().expect("front exists"));
            st.held += 1;
        }
        true
    }

    /// A frame refused before it was queued (too large).
    pub fn lost_unqueued(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Sender: `n` held frames reached the peer.
    pub fn delivered(&self, n: usize) {
        self.settle(n, &self.delivered);
    }

    /// Sender: `n` held frames are lost for good.
    pub fn lost(&self, n: usize) {
        self.settle(n, &self.dropped);
    }

    fn settle(&self, n: usize, counter: &AtomicU64) {
        if n == 0 {
            return;
        }
        let mut st = self.lock();
        if st.stop {
            return; // close counted them already
        }
        st.held -= n;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
    }

    /// Sender: held frames go back to the head of the queue, in their order, to be sent
    /// again on the next connection.
    pub fn requeue(&self, frames: impl DoubleEndedIterator<Item = Vec<u8>>) {
        let mut st = self.lock();
        if st.stop {
            return;
        }
        for f in frames.rev() {
            st.held -= 1;
            st.frames.push_front(f);
        }
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Sender: waits `d` (not shortened by new frames: a backoff stays a backoff); `false`
    /// once stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if st.stop {
                return false;
            }
            st = match self.wait_until(st, deadline) {
                Some(st) => st,
                None => return true,
            };
        }
    }

    /// One wait for a wake-up, no later than `deadline`; `None` once it has passed.
    fn wait_until<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, State>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        Some(
            self.wake
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0,
        )
    }

    /// Sender: the socket to shut down should `close` give up while the sender is blocked.
    pub fn set_socket(&self, s: Option<TcpStream>) {
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Waits up to `timeout` for everything queued and held to be settled, then stops the
    /// sender; what is still unsettled counts as dropped. Returns how many that was.
    pub fn close(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.stop && (!st.frames.is_empty() || st.held > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .progress
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let left = if st.stop {
            0
        } else {
            (st.frames.len() + st.held) as u64
        };
        st.frames.clear();
        st.held = 0;
        st.stop = true;
        drop(st);
        self.dropped.fetch_add(left, Ordering::Relaxed);
        self.wake.notify_all();
        let sock = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = sock {
            if left > 0 {
                // Given up: frees a sender blocked in a write to a peer that takes nothing.
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        left
    }

    /// Frames waiting or held.
    pub fn queued(&self) -> u64 {
        let st = self.lock();
        (st.frames.len() + st.held) as u64
    }

    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_and_close_counts_what_is_left() {
        let q = Queue::new(2);
        assert!(q.push(vec![1]));
        assert!(q.push(vec![2]));
        assert!(!q.push(vec![3]));
        let mut got = Vec::new();
        assert!(q.take(&mut got, 1 << 20, Some(Duration::ZERO)));
        assert_eq!(got, [vec![1], vec![2]]);
        assert_eq!(q.queued(), 2, "held frames still count as queued");
        assert!(!q.push(vec![3]), "held frames take room too");
        q.delivered(1);
        q.requeue(got.drain(1..));
        let mut again = Vec::new();
        assert!(q.take(&mut again, 1, Some(Duration::ZERO)));
        assert_eq!(again, [vec![2]], "requeued at the head");
        q.requeue(again.drain(..));
        assert_eq!(q.close(Duration::from_millis(10)), 1);
        assert_eq!(q.counts(), (1, 3, 0));
        assert!(!q.take(&mut again, 1, None), "stopped");
        assert!(!q.push(vec![4]));
        assert_eq!(
            q.close(Duration::ZERO),
            0,
            "closing twice counts nothing twice"
        );
        assert_eq!(q.counts(), (1, 4, 0));
    }

    #[test]
    fn close_waits_for_the_sender() {
        let q = std::sync::Arc::new(Queue::new(10));
        q.push(vec![1]);
        let sender = q.clone();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while sender.take(&mut got, 1 << 20, None) {
                std::thread::sleep(Duration::from_millis(50));
                sender.delivered(got.len());
                got.clear();
            }
        });
        assert_eq!(q.close(Duration::from_secs(5)), 0);
        assert_eq!(q.counts().0, 1);
        t.join().unwrap();
    }
}
