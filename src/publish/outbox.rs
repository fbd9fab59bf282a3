//! The durable outbox's decision core: which alert to publish next, what to forget after a PUBACK,
//! what to evict when full. Pure (no I/O, no clock): inputs in, [`Action`]s out, in the style of
//! boringtun. The MQTT task ([`super::mqtt`]) feeds it connection and acknowledgement events and
//! carries out the actions against the broker and the on-disk log ([`super::store`]).
//!
//! Guarantees (tested below):
//! - entries are published in sequence order, oldest first, at most `window` unacknowledged at a
//!   time, and only while connected;
//! - an entry leaves the outbox only when acknowledged (`Delete`) or evicted because the outbox is
//!   full (`Evict`, oldest first: the newest alerts describe the current state of the booth);
//! - a disconnect returns every in-flight entry to pending; on reconnect they go out again, in
//!   order, keeping their sequence number (and so their alert id, which lives in the payload).

use std::collections::VecDeque;

/// What the outbox asks its driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish entry `seq` (QoS 1) now.
    Publish(u64),
    /// `seq` was acknowledged by the broker: remove it from disk.
    Delete(u64),
    /// The outbox is full: `seq` (the oldest) is dropped unpublished; remove it from disk, count it.
    Evict(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
}

/// The outbox state machine.
#[derive(Debug)]
pub struct OutboxCore {
    /// Entries in sequence order.
    queue: VecDeque<(u64, State)>,
    capacity: usize,
    window: usize,
    in_flight: usize,
    connected: bool,
    evicted: u64,
}

impl OutboxCore {
    /// `capacity` ≥ 1 entries kept; at most `window` ≥ 1 unacknowledged publishes.
    pub fn new(capacity: usize, window: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            window: window.max(1),
            in_flight: 0,
            connected: false,
            evicted: 0,
        }
    }

    /// Entries not yet acknowledged.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Entries dropped because the outbox was full, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A new entry was committed to disk. Sequence numbers must increase.
    pub fn enqueue(&mut self, seq: u64) -> Vec<Action> {
        let mut out = Vec::new();
        debug_assert!(self.queue.back().is_none_or(|(s, _)| *s < seq));
        while self.queue.len() >= self.capacity {
            if let Some((old, st)) = self.queue.pop_front() {
                if st == State::InFlight {
                    self.in_flight -= 1;
                }
                self.evicted += 1;
                out.push(Action::Evict(old));
            }
        }
        self.queue.push_back((seq, State::Pending));
        self.fill(&mut out);
        out
    }

    /// The broker accepted our CONNECT (CONNACK).
    pub fn connected(&mut self) -> Vec<Action> {
        self.reset_in_flight();
        self.connected = true;
        let mut out = Vec::new();
        self.fill(&mut out);
        out
    }

    /// The connection dropped: nothing in flight will be acknowledged any more.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.reset_in_flight();
    }

    /// The broker acknowledged `seq` (PUBACK). Unknown sequence numbers (already evicted, or a
    /// stale acknowledgement) are ignored.
    pub fn acked(&mut self, seq: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(i) = self.queue.iter().position(|(s, _)| *s == seq) {
            let (_, st) = self.queue.remove(i).expect("index from position"); // invariant
            if st == State::InFlight {
                self.in_flight -= 1;
            }
            out.push(Action::Delete(seq));
        }
        self.fill(&mut out);
        out
    }

    /// A `Publish(seq)` could not be handed to the client (its queue was full): `seq` is pending
    /// again and will go out on the next [`OutboxCore::retry`].
    pub fn publish_failed(&mut self, seq: u64) {
        if let Some(e) = self.queue.iter_mut().find(|(s, _)| *s == seq) {
            if e.1 == State::InFlight {
                e.1 = State::Pending;
                self.in_flight -= 1;
            }
        }
    }

    /// Periodic: publish what the window allows (after a failed hand-over).
    pub fn retry(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.fill(&mut out);
        out
    }

    fn reset_in_flight(&mut self) {
        for e in self.queue.iter_mut() {
            e.1 = State::Pending;
        }
        self.in_flight = 0;
    }

    fn fill(&mut self, out: &mut Vec<Action>) {
        if !self.connected {
            return;
        }
        // In-order: once we stop at the window, nothing younger goes first.
        for e in self.queue.iter_mut() {
            if self.in_flight >= self.window {
                break;
            }
            if e.1 == State::Pending {
                e.1 = State::InFlight;
                self.in_flight += 1;
                out.push(Action::Publish(e.0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;

    #[test]
    fn nothing_is_published_while_disconnected() {
        let mut c = OutboxCore::new(10, 2);
        assert!(c.enqueue(1).is_empty());
        assert!(c.enqueue(2).is_empty());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn connect_publishes_in_order_within_the_window() {
        let mut c = OutboxCore::new(10, 2);
        for s in 1..=4 {
            c.enqueue(s);
        }
        assert_eq!(c.connected(), vec![Publish(1), Publish(2)]);
        assert_eq!(c.acked(1), vec![Delete(1), Publish(3)]);
        assert_eq!(c.acked(2), vec![Delete(2), Publish(4)]);
        assert_eq!(c.enqueue(5), vec![]);
        assert_eq!(c.acked(3), vec![Delete(3), Publish(5)]);
    }

    #[test]
    fn enqueue_while_connected_publishes_immediately() {
        let mut c = OutboxCore::new(10, 4);
        c.connected();
        assert_eq!(c.enqueue(7), vec![Publish(7)]);
        assert_eq!(c.acked(7), vec![Delete(7)]);
        assert!(c.is_empty());
    }

    #[test]
    fn disconnect_redelivers_in_flight_in_order_on_reconnect() {
        let mut c = OutboxCore::new(10, 3);
        c.connected();
        for s in 1..=5 {
            c.enqueue(s);
        }
        c.acked(1);
        c.disconnected();
        assert_eq!(c.enqueue(6), vec![]);
        assert_eq!(c.acked(99), vec![]); // stale ack from nowhere
        assert_eq!(c.connected(), vec![Publish(2), Publish(3), Publish(4)]);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn ack_after_disconnect_still_removes_the_entry() {
        // The PUBACK was read before the connection broke: the broker has the message.
        let mut c = OutboxCore::new(10, 2);
        c.connected();
        c.enqueue(1);
        c.disconnected();
        assert_eq!(c.acked(1), vec![Delete(1)]);
        assert_eq!(c.connected(), vec![]);
    }

    #[test]
    fn full_outbox_evicts_oldest_and_counts() {
        let mut c = OutboxCore::new(3, 1);
        for s in 1..=3 {
            c.enqueue(s);
        }
        assert_eq!(c.enqueue(4), vec![Evict(1)]);
        assert_eq!(c.enqueue(5), vec![Evict(2)]);
        assert_eq!(c.evicted(), 2);
        assert_eq!(c.connected(), vec![Publish(3)]);
        // Evicting an in-flight entry frees its window slot.
        assert_eq!(c.enqueue(6), vec![Evict(3), Publish(4)]);
        // Its late PUBACK is ignored.
        assert_eq!(c.acked(3), vec![]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn failed_handover_is_retried_in_order() {
        let mut c = OutboxCore::new(10, 2);
        c.connected();
        assert_eq!(c.enqueue(1), vec![Publish(1)]);
        c.publish_failed(1);
        assert_eq!(c.enqueue(2), vec![Publish(1), Publish(2)]);
        c.publish_failed(2);
        c.publish_failed(1);
        assert_eq!(c.retry(), vec![Publish(1), Publish(2)]);
    }

    #[test]
    fn window_never_exceeded_under_random_interleavings() {
        // A small deterministic fuzz: random enqueue/ack/disconnect/reconnect; check invariants.
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut c = OutboxCore::new(50, 4);
        let mut seq = 0;
        let mut in_flight: Vec<u64> = Vec::new();
        let mut deleted = Vec::new();
        let mut evicted = Vec::new();
        for _ in 0..5000 {
            let acts = match next() % 10 {
                0..=4 => {
                    seq += 1;
                    c.enqueue(seq)
                }
                5..=7 if !in_flight.is_empty() => {
                    let s = in_flight.remove(0); // brokers ack in order
                    c.acked(s)
                }
                8 => {
                    c.disconnected();
                    in_flight.clear();
                    vec![]
                }
                _ if !c.is_connected() => c.connected(),
                _ => vec![],
            };
            for a in acts {
                match a {
                    Publish(s) => {
                        assert!(c.is_connected());
                        assert!(in_flight.last().is_none_or(|l| *l < s), "out of order");
                        in_flight.push(s);
                    }
                    Delete(s) => deleted.push(s),
                    Evict(s) => {
                        in_flight.retain(|x| *x != s);
                        evicted.push(s)
                    }
                }
            }
            assert!(in_flight.len() <= 4);
            assert!(c.len() <= 50);
        }
        // Everything enqueued is accounted for exactly once.
        assert_eq!(deleted.len() + evicted.len() + c.len(), seq as usize);
        assert!(!deleted.is_empty());
    }
}
