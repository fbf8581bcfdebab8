//! The `tracing` section: OpenTelemetry spans for every request, exported over OTLP. Off by
//! default. The file says what it sets; the standard `OTEL_*` environment variables fill in
//! what it leaves out ([`TracingConfig::resolve`]), read through a lookup function so tests
//! pass a map instead of the real environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::yaml::{Reader, Section, parse};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(format!(
                "{other:?} is not supported: use grpc or http/protobuf"
            )),
        }
    }
}

/// Which traces are recorded. Every word of `OTEL_TRACES_SAMPLER` but the Jaeger and X-Ray
/// ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    /// The default: a caller's sampled flag is followed; a new trace is kept at `ratio`.
    ParentBasedTraceIdRatio,
}

const SAMPLERS: [(&str, SamplerKind); 6] = [
    (
        "parentbased_traceidratio",
        SamplerKind::ParentBasedTraceIdRatio,
    ),
    ("parentbased_always_on", SamplerKind::ParentBasedAlwaysOn),
    ("parentbased_always_off", SamplerKind::ParentBasedAlwaysOff),
    ("traceidratio", SamplerKind::TraceIdRatio),
    ("always_on", SamplerKind::AlwaysOn),
    ("always_off", SamplerKind::AlwaysOff),
];

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        SAMPLERS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(w, _)| w)
    }
}

/// The section as written; every key optional.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    pub enabled: Option<bool>,
    pub protocol: Option<OtlpProtocol>,
    pub endpoint: Option<String>,
    /// Sent with every export (an API key, a tenant): secrets, never logged.
    pub headers: Option<BTreeMap<String, String>>,
    pub service_name: Option<String>,
    pub sampler: Option<SamplerKind>,
    pub sample_ratio: Option<f64>,
    pub max_queue_size: Option<usize>,
    pub max_export_batch_size: Option<usize>,
    pub scheduled_delay: Option<Duration>,
    pub export_timeout: Option<Duration>,
    pub tls: TlsFilesConfig,
}

/// `tracing.tls`: PEM files for an `https://` endpoint, as written.
#[derive(Debug, Clone, Default)]
pub struct TlsFilesConfig {
    /// Trusted instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (chain) and its key, for a collector that requires mTLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A PEM file and the key or variable that named it (for errors and the summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub from: String,
}

/// TLS to the collector, on when the endpoint is `https://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTls {
    /// `None`: the system roots (SSL_CERT_FILE / SSL_CERT_DIR honoured).
    pub ca: Option<PemFile>,
    /// Certificate and key.
    pub client: Option<(PemFile, PemFile)>,
}

/// The effective settings once the environment filled in the file's gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub protocol: OtlpProtocol,
    /// The full URL spans are sent to (`…/v1/traces` for HTTP).
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, as given.
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerKind,
    pub ratio: f64,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
    pub export_timeout: Duration,
    /// `Some` exactly when the endpoint is `https://`.
    pub tls: Option<ExportTls>,
}

impl TraceSettings {
    /// One line for `check` and the startup log; header names and file paths only.
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            None => "TLS off".to_string(),
            Some(t) => format!(
                "TLS on: CA {}, client certificate {}",
                t.ca.as_ref()
                    .map_or("system roots".to_string(), |f| format!(
                        "{} ({})",
                        f.path.display(),
                        f.from
                    )),
                t.client
                    .as_ref()
                    .map_or("none".to_string(), |(c, k)| format!(
                        "{} with key {} ({})",
                        c.path.display(),
                        k.path.display(),
                        c.from
                    )),
            ),
        };
        format!(
            "tracing: OTLP {} to {} ({tls}; headers {:?}), service {}, sampler {} ratio {}, queue {}, batch {}, every {:?}, timeout {:?}",
            self.protocol.as_str(),
            self.endpoint,
            self.headers.keys().collect::<Vec<_>>(),
            self.service_name,
            self.sampler.as_str(),
            self.ratio,
            self.max_queue_size,
            self.max_export_batch_size,
            self.scheduled_delay,
            self.export_timeout
        )
    }
}

impl TracingConfig {
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut c = TracingConfig {
            enabled: r.field(s, "enabled", parse::boolean),
            ..Self::default()
        };
        c.protocol = r.choice(
            s,
            "protocol",
            &[
                ("grpc", OtlpProtocol::Grpc),
                ("http/protobuf", OtlpProtocol::HttpProtobuf),
            ],
        );
        c.endpoint = r.field(s, "endpoint", |v| endpoint(&parse::string(v)?));
        c.headers = r.field(s, "headers", |v| {
            let map = v.as_mapping().ok_or("must be a mapping of name: value")?;
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let k = k.as_str().ok_or("names must be strings")?;
                let v = v.as_str().ok_or_else(|| format!("{k}: must be a string"))?;
                header(k, v)?;
                out.insert(k.to_ascii_lowercase(), v.to_string());
            }
            Ok(out)
        });
        c.service_name = r.field(s, "service_name", |v| {
            let n = parse::string(v)?;
            if n.is_empty() {
                return Err("must not be empty".into());
            }
            Ok(n)
        });
        c.sampler = r.choice(s, "sampler", &SAMPLERS);
        c.sample_ratio = r.field(s, "sample_ratio", |v| {
            ratio(v.as_f64().ok_or("must be a number from 0 to 1")?)
        });
        c.max_queue_size = r.field(s, "max_queue_size", |v| size(v, 1_000_000));
        c.max_export_batch_size = r.field(s, "max_export_batch_size", |v| size(v, 100_000));
        c.scheduled_delay = r.field(s, "scheduled_delay", positive);
        c.export_timeout = r.field(s, "export_timeout", positive);
        let mut tls = r.child(s, "tls");
        let file = |v: &Value| {
            let p = parse::string(v)?;
            if p.is_empty() {
                return Err("must be a file path".to_string());
            }
            Ok(PathBuf::from(p))
        };
        if tls.has("cert_file") != tls.has("key_file") {
            r.error(
                "tracing.tls",
                "cert_file and key_file go together: set both or neither",
            );
        }
        c.tls.ca_file = r.field(&mut tls, "ca_file", file);
        c.tls.cert_file = r.field(&mut tls, "cert_file", file);
        c.tls.key_file = r.field(&mut tls, "key_file", file);
        r.close(tls);
        if let (Some(q), Some(b)) = (c.max_queue_size, c.max_export_batch_size)
            && b > q
        {
            r.error(
                "tracing.max_export_batch_size",
                "must not be larger than max_queue_size",
            );
        }
        c
    }

    /// The effective settings, or `None` when tracing is off: `enabled` in the file, else
    /// `OTEL_TRACES_EXPORTER=otlp` (`none`, or `OTEL_SDK_DISABLED=true`, keeps it off). Each
    /// setting the file leaves out comes from its `OTEL_*` variable, then the OTel default.
    /// Errors name the variable or key at fault.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceSettings>, Vec<String>> {
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();
        let sdk_disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let enabled = match self.enabled {
            Some(e) => e,
            None => match var("OTEL_TRACES_EXPORTER").as_deref() {
                None | Some("none") => false,
                Some("otlp") => true,
                Some(other) => {
                    errors.push(format!(
                        "OTEL_TRACES_EXPORTER: {other:?} is not supported: use otlp or none"
                    ));
                    false
                }
            },
        };
        if !enabled || sdk_disabled {
            return if errors.is_empty() {
                Ok(None)
            } else {
                Err(errors)
            };
        }
        // A signal-specific variable wins over the general one, as in every OTel SDK.
        let either = |signal: &str, general: &str| {
            var(signal)
                .map(|v| (signal.to_string(), v))
                .or_else(|| var(general).map(|v| (general.to_string(), v)))
        };
        let mut check = |r: Result<(), String>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };

        let mut protocol = OtlpProtocol::Grpc;
        if let Some(p) = self.protocol {
            protocol = p;
        } else if let Some((k, v)) = either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            check(
                OtlpProtocol::parse(&v)
                    .map(|p| protocol = p)
                    .map_err(|e| format!("{k}: {e}")),
            );
        }

        // OTEL_EXPORTER_OTLP_(TRACES_)INSECURE: for gRPC, the scheme of an endpoint written
        // without one (https unless `true`), as the OTLP exporter spec has it.
        let mut insecure = false;
        if let Some((k, v)) = either(
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
            "OTEL_EXPORTER_OTLP_INSECURE",
        ) {
            match v.to_ascii_lowercase().as_str() {
                "true" => insecure = true,
                "false" => {}
                _ => check(Err(format!("{k}: must be true or false"))),
            }
        }
        let env_endpoint = |e: &str| -> Result<String, String> {
            let has_scheme = e
                .split_once("://")
                .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']));
            match protocol {
                OtlpProtocol::Grpc if !has_scheme => {
                    let scheme = if insecure { "http" } else { "https" };
                    endpoint(&format!("{scheme}://{e}"))
                }
                _ => endpoint(e),
            }
        };
        let default_endpoint = match protocol {
            OtlpProtocol::Grpc => "http://localhost:4317".to_string(),
            OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_string(),
        };
        let mut url = default_endpoint;
        if let Some(e) = &self.endpoint {
            url = e.clone();
        } else if let Some(e) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            // The per-signal endpoint is the whole URL.
            check(
                env_endpoint(&e)
                    .map(|e| url = e)
                    .map_err(|w| format!("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: {w}")),
            );
        } else if let Some(e) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            // The general one is a base: HTTP appends the signal's path.
            check(
                env_endpoint(&e)
                    .map(|e| {
                        url = match protocol {
                            OtlpProtocol::Grpc => e,
                            OtlpProtocol::HttpProtobuf => {
                                format!("{}/v1/traces", e.trim_end_matches('/'))
                            }
                        }
                    })
                    .map_err(|w| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {w}")),
            );
        }

        let mut headers = BTreeMap::new();
        if let Some(h) = &self.headers {
            headers = h.clone();
        } else if let Some((k, v)) = either(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            check(
                env_headers(&v)
                    .map(|h| headers = h)
                    .map_err(|e| format!("{k}: {e}")),
            );
        }

        let service_name = self
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "mcp-sentinel".to_string());
        let mut resource = Vec::new();
        if let Some(v) = var("OTEL_RESOURCE_ATTRIBUTES") {
            check(
                env_pairs(&v)
                    .map(|p| resource = p)
                    .map_err(|e| format!("OTEL_RESOURCE_ATTRIBUTES: {e}")),
            );
        }

        let tls = self.export_tls(&url, &var, &mut errors);

        let mut sampler = SamplerKind::ParentBasedTraceIdRatio;
        if let Some(s) = self.sampler {
            sampler = s;
        } else if let Some(v) = var("OTEL_TRACES_SAMPLER") {
            match SAMPLERS.iter().find(|(w, _)| *w == v) {
                Some((_, s)) => sampler = *s,
                None => errors.push(format!("OTEL_TRACES_SAMPLER: {v:?} is not supported")),
            }
        }
        let mut ratio_value = 1.0;
        if let Some(r) = self.sample_ratio {
            ratio_value = r;
        } else if let Some(v) = var("OTEL_TRACES_SAMPLER_ARG") {
            match v.parse::<f64>().map_err(|e| e.to_string()).and_then(ratio) {
                Ok(r) => ratio_value = r,
                Err(e) => errors.push(format!("OTEL_TRACES_SAMPLER_ARG: {e}")),
            }
        }

        let mut number = |key: &str, file: Option<usize>, default: usize| -> usize {
            if let Some(n) = file {
                return n;
            }
            match var(key).map(|v| v.parse::<usize>()) {
                None => default,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    errors.push(format!("{key}: must be a positive whole number"));
                    default
                }
            }
        };
        let max_queue_size = number("OTEL_BSP_MAX_QUEUE_SIZE", self.max_queue_size, 2048);
        let max_export_batch_size = number(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            self.max_export_batch_size,
            512,
        )
        .min(max_queue_size);
        let scheduled_delay = self.scheduled_delay.unwrap_or(Duration::from_millis(number(
            "OTEL_BSP_SCHEDULE_DELAY",
            None,
            5000,
        )
            as u64));
        let export_timeout = self.export_timeout.unwrap_or(Duration::from_millis(number(
            "OTEL_BSP_EXPORT_TIMEOUT",
            None,
            10_000,
        ) as u64));

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(TraceSettings {
            protocol,
            endpoint: url,
            headers,
            service_name,
            resource,
            sampler,
            ratio: ratio_value,
            max_queue_size,
            max_export_batch_size,
            scheduled_delay,
            export_timeout,
            tls,
        }))
    }

    /// TLS for `url`: the file's `tls` keys, else `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`,
    /// `…CLIENT_CERTIFICATE` and `…CLIENT_KEY`. `None` for an `http://` endpoint, where a TLS
    /// setting is an error (it would be ignored: spans would travel in clear).
    fn export_tls(
        &self,
        url: &str,
        var: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<ExportTls> {
        let either = |signal: &str, general: &str| {
            var(signal)
                .map(|v| (signal.to_string(), v))
                .or_else(|| var(general).map(|v| (general.to_string(), v)))
        };
        let pem = |path: &PathBuf, from: &str| PemFile {
            path: path.clone(),
            from: from.to_string(),
        };
        let from_env = |(from, path): (String, String)| PemFile {
            path: PathBuf::from(path),
            from,
        };
        let ca = match &self.tls.ca_file {
            Some(p) => Some(pem(p, "tracing.tls.ca_file")),
            None => either(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            )
            .map(from_env),
        };
        let client = match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => Some((
                pem(c, "tracing.tls.cert_file"),
                pem(k, "tracing.tls.key_file"),
            )),
            _ => {
                let cert = either(
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                )
                .map(from_env);
                let key = either(
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                )
                .map(from_env);
                match (cert, key) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    (Some(one), None) | (None, Some(one)) => {
                        errors.push(format!(
                            "{}: a client certificate needs its key and a key its certificate \
                             (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                             OTEL_EXPORTER_OTLP_CLIENT_KEY, or their TRACES_ forms)",
                            one.from
                        ));
                        None
                    }
                }
            }
        };
        if url.starts_with("https://") {
            return Some(ExportTls { ca, client });
        }
        for f in ca.iter().chain(client.iter().map(|(c, _)| c)) {
            errors.push(format!(
                "{}: TLS settings need an https:// endpoint, not {url}",
                f.from
            ));
        }
        None
    }
}

/// An `http://` or `https://` URL with a host.
fn endpoint(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{s:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(s.to_string())
}

fn header(k: &str, v: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| format!("{k:?} is not a header name"))?;
    http::HeaderValue::from_str(v)
        .map_err(|_| format!("{k}: the value is not a valid header value"))?;
    Ok(())
}

/// `k=v,k2=v2`, values percent-encoded (the OTel environment format).
fn env_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| "must be a list of name=value".to_string())?;
        out.push((k.trim().to_string(), percent_decode(v.trim())?));
    }
    Ok(out)
}

fn env_headers(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in env_pairs(s)? {
        header(&k, &v)?;
        out.insert(k.to_ascii_lowercase(), v);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a % must be followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

fn ratio(r: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err("must be a number from 0 to 1".into())
    }
}

fn size(v: &Value, max: usize) -> Result<usize, String> {
    match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

fn positive(v: &Value) -> Result<Duration, String> {
    let d = parse::duration(v)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
