//! What the admin port's `/metrics` serves, and in which format: Prometheus text 0.0.4 unless
//! the scraper's `Accept` prefers OpenMetrics 1.0 text, the format that carries exemplars.

use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};

use super::exemplars::ExemplarTable;
use super::openmetrics;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, byte for byte what the `prometheus` crate writes.
    Text,
    /// OpenMetrics 1.0 text, with exemplars.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4",
            Format::OpenMetrics => openmetrics::CONTENT_TYPE,
        }
    }

    /// The format for a scrape whose `Accept` header values are `accept`: OpenMetrics when it
    /// is named (`application/openmetrics-text`, version 1.0.0, 0.0.1 or none) with a q above
    /// 0 and at least the q of plain text (`text/plain`, else `text/*`, else `*/*`: the most
    /// specific range decides); text otherwise, including with no `Accept` at all. A wildcard
    /// alone never picks OpenMetrics, so `curl` gets the text it always had.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let mut openmetrics: Option<f32> = None;
        // text/plain, text/*, */*.
        let mut text: [Option<f32>; 3] = [None; 3];
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let mut q = 1.0;
            let mut version = None;
            for param in parts {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim() {
                    k if k.eq_ignore_ascii_case("q") => {
                        // An unreadable weight makes the range unacceptable.
                        q = v
                            .parse::<f32>()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))
                            .unwrap_or(0.0);
                    }
                    k if k.eq_ignore_ascii_case("version") => version = Some(v),
                    _ => {}
                }
            }
            let slot = if media.eq_ignore_ascii_case("application/openmetrics-text") {
                if !matches!(version, None | Some("1.0.0" | "0.0.1")) {
                    continue;
                }
                &mut openmetrics
            } else if media.eq_ignore_ascii_case("text/plain") {
                &mut text[0]
            } else if media.eq_ignore_ascii_case("text/*") {
                &mut text[1]
            } else if media == "*/*" {
                &mut text[2]
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        let text = text.into_iter().flatten().next().unwrap_or(0.0);
        match openmetrics {
            Some(om) if om > 0.0 && om >= text => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// A registry, and the exemplars of one of its histograms (the sidecar's request durations).
#[derive(Clone)]
pub struct Exposition {
    registry: Registry,
    exemplars: Option<Arc<ExemplarTable>>,
}

impl Exposition {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            exemplars: None,
        }
    }

    pub fn with_exemplars(registry: Registry, exemplars: Arc<ExemplarTable>) -> Self {
        Self {
            registry,
            exemplars: Some(exemplars),
        }
    }

    /// Every metric, in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let families = self.registry.gather();
        match format {
            Format::Text => text(&families),
            Format::OpenMetrics => {
                let lookup = |mf: &_, m: &_, bound| {
                    self.exemplars.as_ref().and_then(|t| t.lookup(mf, m, bound))
                };
                openmetrics::encode(&families, &lookup).into_bytes()
            }
        }
    }
}

/// The Prometheus text exposition of gathered families.
pub fn text(families: &[prometheus::proto::MetricFamily]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(families, &mut buf)
        .expect("text encoding into a Vec cannot fail");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn openmetrics_only_when_named_and_not_less_wanted_than_text() {
        use Format::{OpenMetrics as Om, Text};
        for (accept, want) in [
            (vec![], Text),
            (vec![""], Text),
            (vec!["*/*"], Text),
            (vec!["text/plain"], Text),
            (vec!["application/json"], Text),
            (vec![PROMETHEUS], Om),
            // Prometheus 3's default, with text 1.0.0 and UTF-8 escaping.
            (
                vec![
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ],
                Om,
            ),
            (vec!["application/openmetrics-text"], Om),
            (vec!["Application/OpenMetrics-Text; Version=1.0.0"], Om),
            (vec!["application/openmetrics-text; version=\"1.0.0\""], Om),
            (vec!["application/openmetrics-text; version=0.0.1"], Om),
            // A version we do not write.
            (vec!["application/openmetrics-text; version=2.0.0"], Text),
            (vec!["application/openmetrics-text;q=0"], Text),
            (
                vec!["application/openmetrics-text;q=0, text/plain;q=0"],
                Text,
            ),
            (vec!["application/openmetrics-text;q=x"], Text),
            (vec!["application/openmetrics-text;q=2"], Text),
            (
                vec!["text/plain;q=0.9, application/openmetrics-text;q=0.5"],
                Text,
            ),
            (
                vec!["text/plain;q=0.5, application/openmetrics-text;q=0.5"],
                Om,
            ),
            (
                vec!["text/*;q=0.9, application/openmetrics-text;q=0.5"],
                Text,
            ),
            // The most specific range decides text's weight.
            (
                vec!["text/plain;q=0.1, */*;q=1, application/openmetrics-text;q=0.5"],
                Om,
            ),
            (vec!["*/*;q=0.6, application/openmetrics-text;q=0.5"], Text),
            // Several header lines are one list.
            (vec!["text/plain;q=0.2", "application/openmetrics-text"], Om),
            (vec![";;,,=;q=;", "application/openmetrics-text;;q"], Om),
        ] {
            assert_eq!(
                Format::negotiate(accept.iter().copied()),
                want,
                "{accept:?}"
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::Text.content_type(), "text/plain; version=0.0.4");
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }
}
