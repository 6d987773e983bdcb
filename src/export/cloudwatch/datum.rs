//! CloudWatch datums and the `PutMetricData` limits they are packed under, as plain data so
//! encoding and batching are tested without the SDK.

use std::time::{Duration, SystemTime};

/// `PutMetricData`: at most 150 values per datum.
pub const MAX_PAIRS: usize = 150;
/// `PutMetricData`: datums per request.
pub const MAX_DATUMS: usize = 1000;
/// `PutMetricData`: bytes per request (the payload before compression).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Dimensions per datum.
pub const MAX_DIMENSIONS: usize = 30;
/// CloudWatch accepts timestamps up to two weeks old...
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// ...and up to two hours ahead.
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600);

/// A latency distribution in milliseconds, ready for a datum.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Ascending, finite, positive.
    pub values: Vec<f64>,
    /// Same length as `values`; each at least 1.
    pub counts: Vec<f64>,
    /// The largest `|sample - representative| / sample` the merging introduced (on top of the
    /// histogram's own precision); 0 when nothing had to be merged.
    pub max_relative_error: f64,
}

impl Distribution {
    /// Total number of samples.
    pub fn sample_count(&self) -> f64 {
        self.counts.iter().sum()
    }
}

/// Units used by hopwatch's datums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
    None,
}

/// What a datum carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Single(f64),
    Distribution(Distribution),
}

/// One datum, before it becomes an SDK `MetricDatum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub metric: String,
    pub dimensions: Vec<(String, String)>,
    pub timestamp: SystemTime,
    pub unit: Unit,
    pub value: Value,
    pub storage_resolution: u8,
}

/// Why a datum can't be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// NaN or infinite: CloudWatch rejects the whole request for one.
    NotFinite,
    TooManyDimensions(usize),
    TooManyValues(usize),
    /// Older than two weeks or more than two hours ahead.
    OutOfWindow,
}

impl Datum {
    /// Checks a datum against CloudWatch's limits as of `now`.
    pub fn check(&self, now: SystemTime) -> Result<(), Rejected> {
        match &self.value {
            Value::Single(v) if !v.is_finite() => return Err(Rejected::NotFinite),
            Value::Distribution(d) => {
                if d.values.len() > MAX_PAIRS {
                    return Err(Rejected::TooManyValues(d.values.len()));
                }
                if d.values.iter().chain(&d.counts).any(|v| !v.is_finite()) {
                    return Err(Rejected::NotFinite);
                }
            }
            Value::Single(_) => {}
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(Rejected::TooManyDimensions(self.dimensions.len()));
        }
        let too_old = now
            .duration_since(self.timestamp)
            .is_ok_and(|age| age > MAX_AGE);
        let too_new = self
            .timestamp
            .duration_since(now)
            .is_ok_and(|ahead| ahead > MAX_AHEAD);
        if too_old || too_new {
            return Err(Rejected::OutOfWindow);
        }
        Ok(())
    }

    /// A generous estimate of the datum's encoded size: strings as they are, 9 bytes a number
    /// (CBOR doubles), plus framing. Overestimating only makes requests smaller.
    pub fn encoded_size(&self) -> usize {
        let strings: usize = self.metric.len()
            + self
                .dimensions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 24)
                .sum::<usize>();
        let numbers = match &self.value {
            Value::Single(_) => 1,
            Value::Distribution(d) => d.values.len() + d.counts.len(),
        };
        96 + strings + numbers * 9
    }
}

/// How many datums, from the first, make one request: at most `limit` (taken between 1 and
/// [`MAX_DATUMS`]) and [`MAX_REQUEST_BYTES`] estimated bytes. Never 0 while a datum waits: one
/// larger than a request goes alone (CloudWatch then refuses it, and the sender isolates it).
/// The one packing rule: the sender's buffer and [`batches`] both cut requests with it.
pub fn request_len<'a>(datums: impl IntoIterator<Item = &'a Datum>, limit: usize) -> usize {
    let limit = limit.clamp(1, MAX_DATUMS);
    let (mut count, mut bytes) = (0, 0);
    for datum in datums {
        let size = datum.encoded_size();
        if count >= limit || (count > 0 && bytes + size > MAX_REQUEST_BYTES) {
            break;
        }
        bytes += size;
        count += 1;
    }
    count
}

/// Packs datums, in order, into requests cut by [`request_len`].
pub fn batches(mut datums: Vec<Datum>) -> Vec<Vec<Datum>> {
    let mut out = Vec::new();
    while !datums.is_empty() {
        let rest = datums.split_off(request_len(&datums, MAX_DATUMS));
        out.push(std::mem::replace(&mut datums, rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(metric: &str, value: Value) -> Datum {
        Datum {
            metric: metric.into(),
            dimensions: vec![
                ("Chain".into(), "orders".into()),
                ("Hop".into(), "alb".into()),
            ],
            timestamp: SystemTime::now(),
            unit: Unit::Count,
            value,
            storage_resolution: 60,
        }
    }

    fn wide(pairs: usize) -> Distribution {
        Distribution {
            values: (1..=pairs).map(|v| v as f64).collect(),
            counts: vec![1.0; pairs],
            max_relative_error: 0.0,
        }
    }

    #[test]
    fn limits_are_checked() {
        let now = SystemTime::now();
        assert_eq!(datum("HopUp", Value::Single(1.0)).check(now), Ok(()));
        assert_eq!(
            datum("HopUp", Value::Single(f64::NAN)).check(now),
            Err(Rejected::NotFinite)
        );
        assert_eq!(
            datum("HopUp", Value::Single(f64::INFINITY)).check(now),
            Err(Rejected::NotFinite)
        );
        assert_eq!(
            datum("Latency", Value::Distribution(wide(150))).check(now),
            Ok(())
        );
        assert_eq!(
            datum("Latency", Value::Distribution(wide(151))).check(now),
            Err(Rejected::TooManyValues(151))
        );
        let mut nan = wide(3);
        nan.counts[1] = f64::NAN;
        assert_eq!(
            datum("Latency", Value::Distribution(nan)).check(now),
            Err(Rejected::NotFinite)
        );
        let mut d = datum("HopUp", Value::Single(1.0));
        d.dimensions = (0..31).map(|i| (format!("D{i}"), "x".into())).collect();
        assert_eq!(d.check(now), Err(Rejected::TooManyDimensions(31)));
        let mut old = datum("HopUp", Value::Single(1.0));
        old.timestamp = now - MAX_AGE - Duration::from_secs(1);
        assert_eq!(old.check(now), Err(Rejected::OutOfWindow));
        let mut ahead = datum("HopUp", Value::Single(1.0));
        ahead.timestamp = now + MAX_AHEAD + Duration::from_secs(1);
        assert_eq!(ahead.check(now), Err(Rejected::OutOfWindow));
        let mut recent = datum("HopUp", Value::Single(1.0));
        recent.timestamp = now - Duration::from_secs(13 * 24 * 3600);
        assert_eq!(recent.check(now), Ok(()), "13 days old is still accepted");
    }

    #[test]
    fn batches_respect_count_and_size() {
        let small: Vec<_> = (0..2500)
            .map(|_| datum("HopUp", Value::Single(1.0)))
            .collect();
        let b = batches(small);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );

        // 150-pair distributions are ~2.9 KB each: the byte limit binds before the count.
        let big: Vec<_> = (0..1000)
            .map(|_| datum("Latency", Value::Distribution(wide(150))))
            .collect();
        let b = batches(big);
        assert!(b.len() > 1);
        for batch in &b {
            let bytes: usize = batch.iter().map(Datum::encoded_size).sum();
            assert!(bytes <= MAX_REQUEST_BYTES && batch.len() <= MAX_DATUMS);
        }
        assert_eq!(
            b.iter().map(Vec::len).sum::<usize>(),
            1000,
            "nothing lost in packing"
        );
        assert!(batches(Vec::new()).is_empty());
    }
}
