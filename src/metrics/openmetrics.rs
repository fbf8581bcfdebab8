//! The OpenMetrics 1.0 text exposition of gathered metric families: the format that carries
//! exemplars, which the `prometheus` crate's text format 0.0.4 cannot. Written over the same
//! `registry.gather()` the 0.0.4 encoder reads, so both formats show the same samples.

use std::fmt::Write as _;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use super::exemplars::Exemplar;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a histogram bucket's exemplar comes from: (family, series, bucket upper bound).
pub type ExemplarLookup<'a> = &'a dyn Fn(&MetricFamily, &Metric, f64) -> Option<Exemplar>;

/// `families` in OpenMetrics text, ending with `# EOF`.
///
/// A counter named `…_total` is the family without the suffix (`# TYPE x counter`, sample
/// `x_total`), as OpenMetrics requires. A counter without the suffix would have to gain it, a
/// different series name in each format; it is written as `unknown` instead, its series name
/// unchanged (none of ours is named so).
pub fn encode(families: &[MetricFamily], exemplar: ExemplarLookup<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for mf in families {
        let name = mf.name();
        let (family, kind) = match mf.get_field_type() {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(stem) if !stem.is_empty() => (stem, "counter"),
                _ => (name, "unknown"),
            },
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        if !mf.help().is_empty() {
            out.push_str("# HELP ");
            out.push_str(family);
            out.push(' ');
            escape(mf.help(), &mut out);
            out.push('\n');
        }
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for m in mf.get_metric() {
            match mf.get_field_type() {
                MetricType::COUNTER => sample(&mut out, name, m, None, m.get_counter().get_value()),
                MetricType::GAUGE => sample(&mut out, name, m, None, m.get_gauge().get_value()),
                // The crate makes none (its own text encoder cannot write one) and deprecates
                // reading them: declared, no samples.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => histogram(&mut out, mf, m, exemplar),
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let label = canonical(q.quantile());
                        let extra = Some(("quantile", label.as_str()));
                        sample(&mut out, name, m, extra, q.value());
                    }
                    let sum = format!("{name}_sum");
                    sample(&mut out, &sum, m, None, s.sample_sum());
                    let count = format!("{name}_count");
                    sample(&mut out, &count, m, None, s.sample_count() as f64);
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram(out: &mut String, mf: &MetricFamily, m: &Metric, exemplar: ExemplarLookup<'_>) {
    let name = mf.name();
    let h = m.get_histogram();
    let bucket = format!("{name}_bucket");
    let mut inf_seen = false;
    let buckets = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()));
    // The crate leaves out the `+Inf` bucket; OpenMetrics requires it (the count).
    let inf = std::iter::once((f64::INFINITY, h.get_sample_count()));
    for (bound, count) in buckets.chain(inf) {
        if inf_seen {
            break;
        }
        inf_seen = bound == f64::INFINITY;
        let le = canonical(bound);
        sample(out, &bucket, m, Some(("le", le.as_str())), count as f64);
        if let Some(e) = exemplar(mf, m, bound) {
            // Replaces the newline `sample` ended with.
            out.pop();
            e.write(out, number);
            out.push('\n');
        }
    }
    sample(
        out,
        &format!("{name}_count"),
        m,
        None,
        h.get_sample_count() as f64,
    );
    sample(out, &format!("{name}_sum"), m, None, h.get_sample_sum());
}

/// `name{labels} value`, and the timestamp (seconds) if the metric has one.
fn sample(out: &mut String, name: &str, m: &Metric, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    labels(out, m.get_label(), extra);
    out.push(' ');
    number(value, out);
    let ms = m.timestamp_ms();
    if ms != 0 {
        let sign = if ms < 0 { "-" } else { "" };
        let abs = ms.unsigned_abs();
        let _ = write!(out, " {sign}{}.{:03}", abs / 1000, abs % 1000);
    }
    out.push('\n');
}

fn labels(out: &mut String, pairs: &[LabelPair], extra: Option<(&str, &str)>) {
    let all = pairs.iter().map(|p| (p.name(), p.value())).chain(extra);
    let mut sep = '{';
    for (k, v) in all {
        out.push(sep);
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
        sep = ',';
    }
    if sep == ',' {
        out.push('}');
    }
}

/// A label value or help text: `\`, newline and `"` escaped, as OpenMetrics has it for both.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A sample value: `+Inf`, `-Inf`, `NaN`, else the shortest decimal that reads back the same
/// (Rust's `Display` never writes an exponent).
pub fn number(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A number as a label value (`le`, `quantile`): one text per number, as OpenMetrics' canonical
/// numbers and Prometheus' own client write it (Go's shortest `%g`, with `.0` on integers):
/// `1.0`, `0.25`, `5e-05`, `+Inf`.
pub fn canonical(v: f64) -> String {
    if !v.is_finite() {
        let mut s = String::new();
        number(v, &mut s);
        return s;
    }
    // Rust's `{:e}` gives the shortest digits that read back the same: `2.5e-4`, `3e1`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut s = String::from(sign);
    if !(-4..6).contains(&exp) {
        // d[.ddd]e±XX, the exponent of at least two digits.
        let (first, rest) = digits.split_at(digits.len().min(1));
        s.push_str(first);
        if !rest.is_empty() {
            s.push('.');
            s.push_str(rest);
        }
        let _ = write!(
            s,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp < 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', exp.unsigned_abs() as usize - 1));
        s.push_str(&digits);
    } else {
        let int_len = exp.unsigned_abs() as usize + 1;
        if digits.len() <= int_len {
            s.push_str(&digits);
            s.extend(std::iter::repeat_n('0', int_len - digits.len()));
            s.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(int_len);
            s.push_str(int);
            s.push('.');
            s.push_str(frac);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn numbers_as_label_values_are_canonical() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (30.0, "30.0"),
            (2.5, "2.5"),
            (0.5, "0.5"),
            (0.00025, "0.00025"),
            (0.0001, "0.0001"),
            (0.00005, "5e-05"),
            (0.000_001, "1e-06"),
            (1.5e-7, "1.5e-07"),
            (123_456.0, "123456.0"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1e300, "1e+300"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(canonical(v), want, "{v:e}");
        }
    }

    #[test]
    fn sample_values() {
        for (v, want) in [
            (3.0, "3"),
            (0.003, "0.003"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (1e-7, "0.0000001"),
        ] {
            let mut s = String::new();
            number(v, &mut s);
            assert_eq!(s, want);
        }
    }

    fn exemplar(value: f64) -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            value,
            at: UNIX_EPOCH + Duration::from_millis(1_733_570_000_250),
        }
    }

    #[test]
    fn every_kind_with_suffixes_escapes_and_an_exemplar() {
        let r = prometheus::Registry::new();
        let c = IntCounterVec::new(
            Opts::new("app_calls_total", "Calls \\ by \"name\"\nsecond line"),
            &["name"],
        )
        .unwrap();
        c.with_label_values(&["a\"b\\c\nd"]).inc_by(3);
        let odd = IntCounter::new("app_odd", "A counter without the suffix").unwrap();
        odd.inc();
        let g = IntGauge::new("app_open", "Open now").unwrap();
        g.set(-2);
        let h = Histogram::with_opts(
            HistogramOpts::new("app_seconds", "Durations").buckets(vec![0.00005, 1.0, 2.5]),
        )
        .unwrap();
        h.observe(0.5);
        h.observe(0.75);
        h.observe(7.0);
        for m in [
            Box::new(c) as Box<dyn prometheus::core::Collector>,
            Box::new(odd),
            Box::new(g),
            Box::new(h),
        ] {
            r.register(m).unwrap();
        }
        let lookup = |mf: &MetricFamily, _: &Metric, bound: f64| {
            (mf.name() == "app_seconds" && bound == 1.0).then(|| exemplar(0.75))
        };
        let got = encode(&r.gather(), &lookup);
        let want = "\
# HELP app_calls Calls \\\\ by \\\"name\\\"\\nsecond line
# TYPE app_calls counter
app_calls_total{name=\"a\\\"b\\\\c\\nd\"} 3
# HELP app_odd A counter without the suffix
# TYPE app_odd unknown
app_odd 1
# HELP app_open Open now
# TYPE app_open gauge
app_open -2
# HELP app_seconds Durations
# TYPE app_seconds histogram
app_seconds_bucket{le=\"5e-05\"} 0
app_seconds_bucket{le=\"1.0\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.75 1733570000.250000
app_seconds_bucket{le=\"2.5\"} 2
app_seconds_bucket{le=\"+Inf\"} 3
app_seconds_count 3
app_seconds_sum 8.25
# EOF
";
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_registry_is_just_the_terminator() {
        let r = prometheus::Registry::new();
        assert_eq!(encode(&r.gather(), &|_, _, _| None), "# EOF\n");
    }
}
