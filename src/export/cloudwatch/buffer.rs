//! Datums waiting for CloudWatch. Bounded: when full, the oldest go first, and every datum
//! that goes is counted, so an outage costs a known amount of history and never memory.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::datum::{request_len, Datum, MAX_AGE};

/// A FIFO of datums with a capacity.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Datum>,
    capacity: usize,
}

impl Buffer {
    /// An empty buffer holding at most `capacity` datums (at least 1).
    pub fn new(capacity: usize) -> Self {
        Buffer {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Datums waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends newer datums; returns how many of the oldest had to be dropped to make room.
    pub fn push(&mut self, datums: impl IntoIterator<Item = Datum>) -> usize {
        self.queue.extend(datums);
        self.trim()
    }

    /// Puts a batch that could not be sent back at the front, in its order; returns how many
    /// of the oldest had to be dropped because newer data filled the room meanwhile.
    pub fn restore(&mut self, batch: Vec<Datum>) -> usize {
        for d in batch.into_iter().rev() {
            self.queue.push_front(d);
        }
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let excess = self.queue.len().saturating_sub(self.capacity);
        self.queue.drain(..excess);
        excess
    }

    /// Drops datums CloudWatch would refuse as too old (two weeks) as of `now`; returns how many.
    pub fn expire(&mut self, now: SystemTime) -> usize {
        let before = self.queue.len();
        self.queue.retain(|d| {
            now.duration_since(d.timestamp)
                .map_or(true, |age| age <= MAX_AGE)
        });
        before - self.queue.len()
    }

    /// Empties the buffer; returns what it held, oldest first.
    pub fn take_all(&mut self) -> Vec<Datum> {
        self.queue.drain(..).collect()
    }

    /// Takes the oldest datums that fit one request: at most `limit` (capped at 1,000) datums
    /// and 1 MB, as [`request_len`] cuts them.
    pub fn take_batch(&mut self, limit: usize) -> Vec<Datum> {
        let count = request_len(&self.queue, limit);
        self.queue.drain(..count).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::cloudwatch::datum::{Unit, Value, MAX_DATUMS};
    use std::time::Duration;

    fn datum(i: usize) -> Datum {
        Datum {
            metric: "Probes".into(),
            dimensions: vec![("Chain".into(), "c".into())],
            timestamp: SystemTime::now(),
            unit: Unit::Count,
            value: Value::Single(i as f64),
            storage_resolution: 60,
        }
    }

    fn values(b: &mut Buffer) -> Vec<f64> {
        let mut out = Vec::new();
        loop {
            let batch = b.take_batch(MAX_DATUMS);
            if batch.is_empty() {
                return out;
            }
            out.extend(batch.iter().map(|d| match d.value {
                Value::Single(v) => v,
                Value::Distribution(_) => f64::NAN,
            }));
        }
    }

    #[test]
    fn overflow_drops_exactly_the_oldest() {
        let mut b = Buffer::new(1000);
        assert_eq!(b.push((0..600).map(datum)), 0);
        assert_eq!(b.push((600..1500).map(datum)), 500);
        assert_eq!(b.len(), 1000);
        let got = values(&mut b);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[0], 500.0, "the 500 oldest went");
        assert_eq!(got[999], 1499.0);
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_in_order() {
        let mut b = Buffer::new(1500);
        b.push((0..1200).map(datum));
        let batch = b.take_batch(MAX_DATUMS);
        assert_eq!(batch.len(), 1000);
        assert_eq!(b.len(), 200);
        b.push((1200..1500).map(datum));
        // 1,000 back + 500 waiting = 1,500: fits, nothing lost.
        assert_eq!(b.restore(batch), 0);
        let got = values(&mut b);
        assert_eq!(got, (0..1500).map(|v| v as f64).collect::<Vec<_>>());

        // Newer data filled the room while the batch was out: the oldest of it is dropped.
        let mut b = Buffer::new(1000);
        b.push((0..1000).map(datum));
        let batch = b.take_batch(MAX_DATUMS);
        b.push((1000..1300).map(datum));
        assert_eq!(b.restore(batch), 300);
        assert_eq!(values(&mut b)[0], 300.0);
    }

    #[test]
    fn batches_can_be_made_smaller() {
        let mut b = Buffer::new(100);
        b.push((0..10).map(datum));
        assert_eq!(b.take_batch(3).len(), 3);
        assert_eq!(b.take_batch(0).len(), 1, "never empty while datums wait");
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn too_old_datums_expire() {
        let mut b = Buffer::new(10);
        let mut old = datum(0);
        old.timestamp = SystemTime::now() - MAX_AGE - Duration::from_secs(60);
        b.push([old, datum(1)]);
        assert_eq!(b.expire(SystemTime::now()), 1);
        assert_eq!(values(&mut b), [1.0]);
    }
}
