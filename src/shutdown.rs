//! Graceful shutdown, after tokio's mini-redis: a broadcast-style stop signal plus a drop-guard
//! channel whose closing tells the owner that every stage has finished.
//!
//! Stages run on plain threads as well as on the async runtime, so the signal is an
//! [`AtomicBool`] with a condition variable (threads can sleep on it) mirrored by a
//! `tokio::sync::watch` (tasks can `await` it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Inner {
    stopped: AtomicBool,
    lock: Mutex<()>,
    cvar: Condvar,
    watch: tokio::sync::watch::Sender<bool>,
}

/// Cloneable stop signal shared by every stage.
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (watch, _) = tokio::sync::watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                stopped: AtomicBool::new(false),
                lock: Mutex::new(()),
                cvar: Condvar::new(),
                watch,
            }),
        }
    }

    /// Ask every stage to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.cvar.notify_all();
        self.inner.watch.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Sleep for `dur` on a thread, waking early on shutdown. Returns `true` if shutdown was
    /// triggered.
    pub fn sleep(&self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_triggered() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.inner.cvar.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Wait (async) until shutdown is triggered.
    pub async fn recv(&self) {
        let mut rx = self.inner.watch.subscribe();
        // `wait_for` only errors when the sender is dropped; we own the sender, so it cannot be.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Drop-guard side of the "every stage finished" channel: each stage holds a clone and drops it
/// when it is done; [`Completion::wait`] returns once all clones are gone.
#[derive(Debug, Clone)]
pub struct StageGuard {
    _tx: tokio::sync::mpsc::Sender<()>,
}

/// Owner side of the completion channel.
#[derive(Debug)]
pub struct Completion {
    rx: tokio::sync::mpsc::Receiver<()>,
}

/// Make a guard/completion pair.
pub fn completion() -> (StageGuard, Completion) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (StageGuard { _tx: tx }, Completion { rx })
}

impl Completion {
    /// Wait until every [`StageGuard`] has been dropped, or `timeout` passes. Returns `true` if
    /// every stage finished in time.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.rx.recv()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_wakes_on_trigger() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert!(t.join().unwrap());
        assert!(!Shutdown::new().sleep(Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn completion_waits_for_all_guards() {
        let (guard, done) = completion();
        let g2 = guard.clone();
        drop(guard);
        let h = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(g2);
        });
        assert!(done.wait(Duration::from_secs(5)).await);
        h.await.unwrap();
        let (guard, done) = completion();
        assert!(!done.wait(Duration::from_millis(10)).await);
        drop(guard);
    }
}
