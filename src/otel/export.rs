//! The export side: the OTLP exporter (gRPC or HTTP/protobuf) behind the SDK's batch span
//! processor, bounded so that a request never waits on it. Two wrappers, both counting what is
//! lost: [`Gate`] refuses a span when the queue is full (the SDK drops silently), and
//! [`OnRuntime`] runs each export on a runtime of its own, with a deadline, so a dead or slow
//! collector costs the traffic threads nothing. An `https://` endpoint gets one rustls client
//! config ([`client_tls`]) under either protocol's transport.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus::IntCounter;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::otel::{ExportTls, OtlpProtocol, PemFile, SamplerKind, TraceSettings};
use crate::metrics::TraceCounters as ExportCounters;
use crate::tls::roots::{self, RootsError};

/// Spans waiting in the batch queue (ours, since the SDK does not say).
type Pending = Arc<AtomicUsize>;

/// The tokio runtime exports run on: one thread, apart from traffic. Shut down in the
/// background when dropped, so dropping it never blocks (nor panics inside another runtime).
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The tracer provider — it owns the batch processor, and flushes and shuts it down; no span
/// is made through its tracer ([`super::Otel`] asks the sampler and records spans itself) —
/// and what keeps the export side running.
pub struct Export {
    pub provider: SdkTracerProvider,
    queue: Queue,
    _runtime: Arc<ExportRuntime>,
}

/// The way into the export queue for every span's record ([`super::Child`]): the gate ahead
/// of the provider's batch processor.
#[derive(Clone)]
pub struct Queue(Arc<Gate>);

impl Queue {
    pub fn push(&self, span: SpanData) {
        self.0.on_end(span);
    }
}

/// The provider's handle on the gate it shares with [`Queue`].
#[derive(Debug)]
struct Shared(Arc<Gate>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    // `set_resource` is left to the default: the gate was given the provider's resource
    // before it was shared.
}

impl Export {
    /// Builds the exporter and the provider; nothing is sent until a span ends.
    pub fn start(settings: &TraceSettings, counters: ExportCounters) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the export runtime: {e}"))?;
        let handle = rt.handle().clone();
        let runtime = Arc::new(ExportRuntime(Some(rt)));
        // The gRPC channel is made (lazily) on the export runtime.
        let exporter = {
            let _on = handle.enter();
            build_exporter(settings)?
        };
        let pending: Pending = Arc::default();
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            handle,
            timeout: settings.export_timeout,
            pending: pending.clone(),
            counters: counters.clone(),
            _runtime: runtime.clone(),
        };
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(settings.max_queue_size)
                    .with_max_export_batch_size(settings.max_export_batch_size)
                    .with_scheduled_delay(settings.scheduled_delay)
                    .build(),
            )
            .build();
        let mut gate = Gate {
            inner: batch,
            pending,
            capacity: settings.max_queue_size,
            dropped: counters.dropped_queue_full,
        };
        let mut resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ));
        for (k, v) in &settings.resource {
            if k != "service.name" {
                resource =
                    resource.with_attribute(opentelemetry::KeyValue::new(k.clone(), v.clone()));
            }
        }
        // What the provider would give its processor, given before the gate is shared.
        let resource = resource.build();
        gate.set_resource(&resource);
        let gate = Arc::new(gate);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Shared(gate.clone()))
            .with_resource(resource)
            .build();
        Ok(Self {
            provider,
            queue: Queue(gate),
            _runtime: runtime,
        })
    }

    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }
}

pub(super) fn sampler(s: &TraceSettings) -> Sampler {
    let ratio = || Sampler::TraceIdRatioBased(s.ratio);
    match s.sampler {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => ratio(),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(ratio())),
    }
}

/// The OTLP exporter of the configured protocol. Settings are given explicitly: the crate's
/// own reading of `OTEL_*` is what `TracingConfig::resolve` already did.
fn build_exporter(s: &TraceSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let tls = s.tls.as_ref().map(client_tls).transpose()?;
    let built = match s.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &s.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("tracing.headers: {k:?} is not a header name"))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|_| format!("tracing.headers: {k}: not a valid value"))?;
                headers.insert(name, value);
            }
            let meta =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(s.export_timeout)
                .with_metadata(meta);
            match tls {
                // HTTP/2 negotiated by ALPN over our TLS; the channel connects on first export.
                Some(config) => {
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_only()
                        .enable_http2()
                        .build();
                    let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                        .map_err(|e| format!("tracing.endpoint {}: {e}", s.endpoint))?
                        .timeout(s.export_timeout)
                        .connect_with_connector_lazy(connector);
                    builder.with_channel(channel).build()
                }
                None => builder.with_endpoint(s.endpoint.clone()).build(),
            }
        }
        OtlpProtocol::HttpProtobuf => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.export_timeout)
                .with_headers(s.headers.clone().into_iter().collect());
            match tls {
                Some(config) => {
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_only()
                        .enable_http1()
                        .build();
                    builder
                        .with_http_client(opentelemetry_http::hyper::HyperClient::new(
                            connector,
                            s.export_timeout,
                            None,
                        ))
                        .build()
                }
                None => builder.build(),
            }
        }
    };
    built.map_err(|e| format!("cannot build the OTLP exporter: {e}"))
}

/// The TLS client for an `https://` collector: its certificate verified against the CA file
/// (which then replaces the system roots, as an issuer's `ca_file` does) or the system roots,
/// and the client certificate presented when set. No ALPN: each transport sets its own.
/// `check` calls it too, so a file that is missing, unreadable or not PEM, or a key that is not
/// the certificate's, stops `check` and `run` alike, naming the key or variable.
pub fn client_tls(t: &ExportTls) -> Result<rustls::ClientConfig, String> {
    let roots = match &t.ca {
        Some(f) => roots::ca_file(&f.path).map_err(|e| format!("{} {e}", f.from))?,
        None => roots::system().map_err(|e| match e {
            RootsError::NoSystemRoots(_) => format!(
                "tracing: the endpoint is https:// and {e}: set tracing.tls.ca_file or \
                 OTEL_EXPORTER_OTLP_CERTIFICATE"
            ),
            other => format!("tracing: {other}"),
        })?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tracing: {e}"))?
        .with_root_certificates(roots);
    let Some((cert, key)) = &t.client else {
        return Ok(builder.with_no_client_auth());
    };
    let read = |f: &PemFile| {
        std::fs::read(&f.path).map_err(|e| format!("{} {}: {e}", f.from, f.path.display()))
    };
    let bad = |f: &PemFile, why: String| format!("{} {}: {why}", f.from, f.path.display());
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no PEM certificate".into()));
    }
    // The key's own error never quotes the file: it holds a secret.
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|_| bad(key, "no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| format!("{} and {}: {e}", cert.from, key.from))
}

/// Ahead of the batch processor: a span finds room in the queue or is counted as dropped.
struct Gate {
    inner: BatchSpanProcessor,
    pending: Pending,
    capacity: usize,
    dropped: IntCounter,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Counted here and taken off when the exporter receives the batch: never fewer than
        // the queue holds, so the processor's own (silent) drop cannot happen first.
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Runs the exporter's calls on the export runtime (the batch processor's thread has no tokio
/// reactor), each within the export timeout; counts what arrives and what is lost.
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    pending: Pending,
    counters: ExportCounters,
    _runtime: Arc<ExportRuntime>,
}

impl<E> fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnRuntime")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.pending.fetch_sub(n, Ordering::AcqRel);
        let inner = self.inner.clone();
        let timeout = self.timeout;
        let sent = self
            .handle
            .spawn(async move { tokio::time::timeout(timeout, inner.export(batch)).await })
            .await;
        match sent {
            Ok(Ok(Ok(()))) => {
                self.counters.exported.inc_by(n as u64);
                Ok(())
            }
            Ok(Ok(Err(e))) => {
                self.counters.dropped_export_failed.inc_by(n as u64);
                tracing::debug!(error = %e, spans = n, "trace export failed");
                Err(e)
            }
            Ok(Err(_)) => {
                self.counters.dropped_export_failed.inc_by(n as u64);
                tracing::debug!(spans = n, "trace export timed out");
                Err(OTelSdkError::Timeout(timeout))
            }
            Err(e) => {
                self.counters.dropped_export_failed.inc_by(n as u64);
                Err(OTelSdkError::InternalFailure(e.to_string()))
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, before any export: the exporter is not shared yet.
        match Arc::get_mut(&mut self.inner) {
            Some(e) => e.set_resource(resource),
            None => tracing::warn!("trace exporter busy: resource not set"),
        }
    }
}
