//! Telemetry at the edge of every process: the HTTP endpoint Prometheus scrapes
//! (`/metrics`, `/healthz`, `/readyz`) and the log subscriber (human or JSON lines).
//!
//! Architecture Invariant: nothing here is on a hot path. The endpoint runs on its own named
//! thread and only reads the registry; stages never wait for it.

use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen for metrics on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running metrics endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` on `addr` (port 0 picks a free port; see [`MetricsServer::addr`]).
    ///
    /// - `GET /metrics`: the Prometheus text exposition of every metric;
    /// - `GET /healthz`: 200 while the process runs;
    /// - `GET /readyz`: 200 once [`MetricsServer::set_ready`] said so (the pipeline is
    ///   connected and processing), 503 before.
    pub fn start(addr: SocketAddr, registry: Registry) -> Result<Self, ServeError> {
        let server = tiny_http::Server::http(addr).map_err(|e| ServeError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| ServeError::Bind {
                addr,
                reason: "not an IP socket".into(),
            })?;
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let ready = ready.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("nw-metrics".into())
                .spawn(move || serve(&server, &registry, &ready, &stop))?
        };
        tracing::info!(addr = %bound, "serving metrics on http://{bound}/metrics");
        Ok(MetricsServer {
            addr: bound,
            ready,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Marks the process ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry, ready: &AtomicBool, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: cannot accept a request");
                continue;
            }
        };
        let response = respond(req.method(), req.url(), registry, ready);
        if let Err(e) = req.respond(response) {
            tracing::debug!(error = %e, "metrics endpoint: cannot answer a request");
        }
    }
}

fn text(
    status: u16,
    body: impl Into<Vec<u8>>,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    tiny_http::Response::from_data(body.into())
        .with_status_code(status)
        .with_header(header)
}

fn respond(
    method: &tiny_http::Method,
    url: &str,
    registry: &Registry,
    ready: &AtomicBool,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return text(405, "only GET\n", PLAIN);
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => text(200, buf, encoder.format_type()),
                Err(e) => text(500, format!("cannot encode metrics: {e}\n"), PLAIN),
            }
        }
        "/healthz" => text(200, "ok\n", PLAIN),
        "/readyz" => {
            if ready.load(Ordering::Acquire) {
                text(200, "ready\n", PLAIN)
            } else {
                text(503, "not ready\n", PLAIN)
            }
        }
        "/" => text(
            200,
            "normwatch: /metrics (Prometheus), /healthz, /readyz\n",
            PLAIN,
        ),
        _ => text(404, "not found: try /metrics\n", PLAIN),
    }
}

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event (for log shippers).
    Json,
}

/// Installs the global log subscriber: `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("normwatch_test_things_total", "Things.").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), registry).unwrap();
        let addr = server.addr();
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("normwatch_test_things_total 3"), "{body}");
        assert_eq!(get(addr, "/healthz").0, 200);
        assert_eq!(get(addr, "/readyz").0, 503);
        server.set_ready(true);
        assert_eq!(get(addr, "/readyz").0, 200);
        assert_eq!(get(addr, "/nope").0, 404);
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let first = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Registry::new()).unwrap();
        let err = MetricsServer::start(first.addr(), Registry::new()).unwrap_err();
        assert!(
            err.to_string().contains("cannot listen for metrics on"),
            "{err}"
        );
    }
}
