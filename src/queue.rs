//! A bounded queue that never blocks its producer: when full, the oldest item is dropped and
//! counted. This is how capture stays ahead of a lagging analyser.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    dropped: u64,
}

/// Shared handle; clone it for the producer and the consumer.
#[derive(Debug)]
pub struct DropOldest<T> {
    inner: Arc<(Mutex<State<T>>, Condvar)>,
    capacity: usize,
}

impl<T> Clone for DropOldest<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            capacity: self.capacity,
        }
    }
}

/// What [`DropOldest::pop_timeout`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    Item(T),
    /// Nothing arrived within the timeout; the queue is still open.
    Empty,
    /// The queue is closed and drained.
    Closed,
}

impl<T> DropOldest<T> {
    /// `capacity` is clamped to at least 1.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new((
                Mutex::new(State {
                    items: VecDeque::new(),
                    closed: false,
                    dropped: 0,
                }),
                Condvar::new(),
            )),
            capacity: capacity.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A poisoned lock means a stage panicked while holding it; the data (a queue) is still
        // structurally valid, so carry on rather than cascade the panic.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Push without blocking. Returns the item that was evicted to make room, if any.
    pub fn push(&self, item: T) -> Option<T> {
        let mut st = self.state();
        let evicted = if st.items.len() >= self.capacity {
            st.dropped += 1;
            st.items.pop_front()
        } else {
            None
        };
        st.items.push_back(item);
        drop(st);
        self.inner.1.notify_one();
        evicted
    }

    /// Wait up to `timeout` for an item. After [`close`](Self::close), remaining items are still
    /// handed out before `Closed` is returned, so the consumer drains the queue.
    pub fn pop_timeout(&self, timeout: Duration) -> Pop<T> {
        let mut st = self.state();
        loop {
            if let Some(item) = st.items.pop_front() {
                return Pop::Item(item);
            }
            if st.closed {
                return Pop::Closed;
            }
            let (guard, res) = match self.inner.1.wait_timeout(st, timeout) {
                Ok(x) => x,
                Err(e) => e.into_inner(),
            };
            st = guard;
            if res.timed_out() && st.items.is_empty() && !st.closed {
                return Pop::Empty;
            }
        }
    }

    /// No more pushes will come; wakes the consumer.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Items evicted so far.
    pub fn dropped(&self) -> u64 {
        self.state().dropped
    }

    pub fn len(&self) -> usize {
        self.state().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_counts() {
        let q = DropOldest::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pop_timeout(Duration::ZERO), Pop::Item(2));
        assert_eq!(q.pop_timeout(Duration::ZERO), Pop::Item(3));
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Pop::Empty);
    }

    #[test]
    fn close_drains_before_closed() {
        let q = DropOldest::new(4);
        q.push(1);
        q.close();
        assert_eq!(q.pop_timeout(Duration::ZERO), Pop::Item(1));
        assert_eq!(q.pop_timeout(Duration::ZERO), Pop::<i32>::Closed);
    }
}
