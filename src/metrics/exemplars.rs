//! The latest traced request per (method, bucket) of `request_duration_seconds`, for the
//! OpenMetrics exposition's exemplars. A fixed table, sized at start: nothing grows with traffic,
//! and nothing here runs for a request that was not traced and sampled.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceId};
use prometheus::proto::{Metric, MetricFamily};

/// One observation that a trace explains: which span, what was observed, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub value: f64,
    pub at: SystemTime,
}

/// `trace_id` and `span_id`, 32 and 16 hex digits: 63 characters, within the 128 that
/// OpenMetrics allows an exemplar's label set.
pub const LABELS_LEN: usize = r#"trace_id="",span_id="""#.len() + 32 + 16;
const _: () = assert!(LABELS_LEN <= 128);

impl Exemplar {
    /// ` # {trace_id="…",span_id="…"} value timestamp`, as it follows a bucket's count.
    pub fn write(&self, out: &mut String, format_value: impl Fn(f64, &mut String)) {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
            self.trace_id, self.span_id
        );
        format_value(self.value, out);
        // Seconds since the epoch, to the microsecond; a clock before 1970 gives no timestamp
        // (it is optional).
        if let Ok(t) = self.at.duration_since(UNIX_EPOCH) {
            let _ = write!(out, " {}.{:06}", t.as_secs(), t.subsec_micros());
        }
    }
}

/// The exemplars of one histogram family with one label: a slot per (label value, bucket), the
/// last bucket of a row standing for `+Inf`.
pub struct ExemplarTable {
    family: String,
    label: &'static str,
    /// The label's values, a row each.
    rows: Vec<&'static str>,
    bounds: &'static [f64],
    slots: Box<[Mutex<Option<Exemplar>>]>,
}

impl ExemplarTable {
    /// A table for the histogram `family`, whose `label` takes the values `rows`, with the upper
    /// bounds `bounds` (sorted, without `+Inf`).
    pub fn new(
        family: String,
        label: &'static str,
        rows: Vec<&'static str>,
        bounds: &'static [f64],
    ) -> Self {
        let slots = (0..rows.len() * (bounds.len() + 1))
            .map(|_| Mutex::new(None))
            .collect();
        Self {
            family,
            label,
            rows,
            bounds,
            slots,
        }
    }

    /// The exemplar of a bucket of a gathered series: the series' family and label say the
    /// row, the bucket's upper bound the column.
    pub fn lookup(&self, mf: &MetricFamily, m: &Metric, bound: f64) -> Option<Exemplar> {
        if mf.name() != self.family {
            return None;
        }
        let value = m.get_label().iter().find(|p| p.name() == self.label)?;
        let row = self.rows.iter().position(|r| *r == value.value())?;
        let bucket = if bound == f64::INFINITY {
            self.bounds.len()
        } else {
            self.bounds.iter().position(|b| *b == bound)?
        };
        self.get(row, bucket)
    }

    /// The bucket `value` falls in: the first whose upper bound is at least `value`, or `+Inf`
    /// (NaN too).
    fn bucket(&self, value: f64) -> usize {
        if value.is_nan() {
            return self.bounds.len();
        }
        self.bounds.partition_point(|b| *b < value)
    }

    fn slot(&self, row: usize, bucket: usize) -> Option<&Mutex<Option<Exemplar>>> {
        let width = self.bounds.len() + 1;
        if bucket >= width {
            return None;
        }
        self.slots.get(row.checked_mul(width)?.checked_add(bucket)?)
    }

    /// Notes `e` as the latest exemplar of row `row`, in the bucket its value falls in. A row
    /// out of range is ignored.
    pub fn record(&self, row: usize, e: Exemplar) {
        if let Some(slot) = self.slot(row, self.bucket(e.value)) {
            // Nothing panics while a slot is held; were one poisoned, its value is still whole.
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }

    /// The exemplar of row `row`'s bucket `bucket` (`bounds.len()` for `+Inf`).
    pub fn get(&self, row: usize, bucket: usize) -> Option<Exemplar> {
        *self
            .slot(row, bucket)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    fn at(value: f64, n: u8) -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_bytes([n; 16]),
            span_id: SpanId::from_bytes([n; 8]),
            value,
            at: UNIX_EPOCH + Duration::from_micros(1_733_570_000_123_456),
        }
    }

    #[test]
    fn only_the_bucket_the_value_falls_in_gets_it_and_the_latest_wins() {
        let t = ExemplarTable::new("h".into(), "method", vec!["a", "b"], BOUNDS);
        t.record(1, at(0.005, 1));
        assert_eq!(t.get(1, 1), Some(at(0.005, 1)));
        for (row, bucket) in [(1, 0), (1, 2), (1, 3), (0, 1)] {
            assert_eq!(t.get(row, bucket), None, "{row} {bucket}");
        }
        t.record(1, at(0.002, 2));
        assert_eq!(t.get(1, 1), Some(at(0.002, 2)));
        // A bound is inclusive (`le`); past the last one is +Inf, NaN too.
        t.record(0, at(0.01, 3));
        assert_eq!(t.get(0, 1), Some(at(0.01, 3)));
        t.record(0, at(7.0, 4));
        assert_eq!(t.get(0, 3), Some(at(7.0, 4)));
        t.record(0, at(f64::NAN, 5));
        assert_eq!(t.get(0, 3).map(|e| e.trace_id), Some(at(0.0, 5).trace_id));
        // Out of range: ignored, nothing.
        t.record(2, at(0.005, 6));
        assert_eq!(t.get(2, 1), None);
        assert_eq!(t.get(0, 4), None);
    }

    #[test]
    fn written_with_ids_value_and_timestamp() {
        let mut out = String::new();
        at(0.005, 0xab).write(&mut out, |v, o| o.push_str(&v.to_string()));
        assert_eq!(
            out,
            " # {trace_id=\"abababababababababababababababab\",span_id=\"abababababababab\"} \
             0.005 1733570000.123456"
        );
        let labels = out.split(['{', '}']).nth(1).unwrap();
        assert_eq!(labels.chars().count(), LABELS_LEN);
    }
}
