//! The HTTP API and the live event stream (feature `http`): runledger for hosts in any
//! language.
//!
//! [`router`] builds an axum [`Router`] over an [`Engine`]: JSON endpoints for jobs,
//! out-of-process workers, ingestion runs, schedules and probes, `GET /events` (Server-Sent
//! Events with resume by cursor), and `GET /openapi.json` describing exactly these routes.
//! A host mounts it in its own axum server (and may [`Router::merge`] its own routes, as
//! the browser UI [`ui`] is); [`Server`] runs it on its own runtime for synchronous hosts and the
//! CLI's `runledger serve --http ADDR`.
//!
//! The engine is synchronous: every call runs on tokio's blocking pool, never on the
//! async workers. Errors are JSON `{"code", "message", ...context}` with one status per
//! code ([`status_of`]). See the README's "HTTP API" section for the endpoint reference.
//!
//! ```no_run
//! use runledger::http::{HttpOptions, Server};
//! use runledger::Engine;
//!
//! let engine = Engine::open("app.db")?;
//! let server = Server::start(engine, HttpOptions::default(), "127.0.0.1:8750")?;
//! println!("listening on http://{}", server.addr());
//! server.stop();
//! # Ok::<(), runledger::Error>(())
//! ```

mod auth;
mod error;
mod openapi;
mod routes;
mod stream;
pub mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use auth::{Auth, Token};
pub use error::{status_of, ApiError};
pub use openapi::{document, route_table};
pub use stream::StreamOptions;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::run::{Pipeline, PreflightConfig, ProbeSet};
use crate::SupervisorOptions;

/// What the router serves beyond the engine: pipelines, probes, tokens, limits.
#[derive(Clone)]
pub struct HttpOptions {
    /// Pipelines `POST /ingestion/run` may trigger, by name.
    pub pipelines: BTreeMap<String, Arc<Pipeline>>,
    /// Probes `POST /ingestion/preflight` runs (none: preflight is refused).
    pub probes: Option<Arc<ProbeSet>>,
    /// Freshness and policy of `GET /readiness` and `POST /ingestion/preflight`.
    pub preflight: PreflightConfig,
    /// Accepted bearer tokens (default: none, an open server; [`Auth::from_env`] reads them).
    pub auth: Auth,
    /// Largest request body, in bytes (default 1 MiB + 64 KiB: a full checkpoint fits).
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (default none: CORS off).
    pub cors_origins: Vec<String>,
    /// The recovery limit `GET /jobs/{id}/recovery` counts against (the supervisor's).
    pub max_recoveries: u32,
    /// The supervisor whose last tick `GET /health` reports.
    pub supervisor_name: String,
    /// The actor recorded for operator actions that name none.
    pub default_actor: String,
    /// The event stream's settings.
    pub stream: StreamOptions,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .field("probes", &self.probes.is_some())
            .field("auth", &self.auth)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cors_origins", &self.cors_origins)
            .field("stream", &self.stream)
            .finish()
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        let supervisor = SupervisorOptions::default();
        Self {
            pipelines: BTreeMap::new(),
            probes: None,
            preflight: PreflightConfig::default(),
            auth: Auth::default(),
            max_body_bytes: (1 << 20) + (64 << 10),
            cors_origins: Vec::new(),
            max_recoveries: supervisor.max_recoveries,
            supervisor_name: supervisor.name,
            default_actor: "api".into(),
            stream: StreamOptions::default(),
        }
    }
}

impl HttpOptions {
    /// These options with `pipeline` registered under its name.
    pub fn pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipelines
            .insert(pipeline.name().to_owned(), Arc::new(pipeline));
        self
    }

    /// These options with the probes preflight runs.
    pub fn probes(mut self, probes: ProbeSet, config: PreflightConfig) -> Self {
        self.probes = Some(Arc::new(probes));
        self.preflight = config;
        self
    }

    /// These options with the tokens of the environment ([`Auth::from_env`]).
    pub fn auth_from_env(mut self) -> Self {
        self.auth = Auth::from_env();
        self
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    engine: Engine,
    opts: Arc<HttpOptions>,
    watcher: Arc<stream::Watcher>,
}

/// Runs a synchronous engine call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    match tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    })
    .await
    {
        Ok(Ok(r)) => r.map_err(ApiError::from),
        _ => Err(ApiError::new(
            "INTERNAL",
            "the request failed inside the server",
        )),
    }
}

/// The API as an axum router over `engine`: every route of [`route_table`], JSON errors
/// for unknown routes and methods, body limit, auth, CORS when configured. Starts the
/// event-stream watcher (one thread, stopped when the router and its streams are dropped
/// or by [`Server::stop`]); needs a tokio runtime only to serve, not to build.
pub fn router(engine: Engine, options: HttpOptions) -> Result<Router> {
    Ok(build(engine, options)?.0)
}

fn build(engine: Engine, options: HttpOptions) -> Result<(Router, Arc<stream::Watcher>)> {
    let watcher = stream::Watcher::start(&engine, &options.stream)?;
    let state = AppState {
        engine,
        opts: Arc::new(options),
        watcher: Arc::clone(&watcher),
    };
    let limit = state.opts.max_body_bytes;
    let cors = state.opts.cors_origins.clone();
    let mut app = routes::api()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone())
        // The Trust UI's pages at `/` and `/ui/...` (their own access checks; not in the
        // OpenAPI document, which describes the JSON API).
        .merge(ui::router(state.engine, state.opts));
    if !cors.is_empty() {
        app = app.layer(axum::middleware::from_fn(move |req, next| {
            cors_layer(cors.clone(), req, next)
        }));
    }
    Ok((app, watcher))
}

async fn not_found() -> ApiError {
    ApiError::new("NOT_FOUND", "no such route").with("entity", "route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new("METHOD_NOT_ALLOWED", "this route does not take that method")
}

async fn cors_layer(
    origins: Vec<String>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| origins.iter().any(|a| a == o || a == "*"))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS;
    let mut res = if preflight && origin.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let Some(o) = origin {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, last-event-id"),
            );
        }
        h.insert(
            HeaderName::from_static("access-control-expose-headers"),
            HeaderValue::from_static("retry-after"),
        );
    }
    res
}

/// Whether `addr` is a loopback address (127.0.0.0/8, ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The API served on its own tokio runtime (for synchronous hosts, the CLI and tests).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    watcher: Arc<stream::Watcher>,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) and serves [`router`] until
    /// [`Server::stop`]. Refuses a non-loopback address when no token is configured.
    pub fn start(engine: Engine, options: HttpOptions, addr: &str) -> Result<Self> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| Error::invalid("http", format!("{addr:?} is not an IP:port address")))?;
        if !is_loopback(&addr) && options.auth.is_open() {
            return Err(Error::invalid(
                "http",
                format!(
                    "refusing to serve {addr} without a token: set RUNLEDGER_API_TOKEN (or bind 127.0.0.1)"
                ),
            ));
        }
        let workers = std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(2);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("runledger-http")
            .enable_all()
            .build()
            .map_err(|e| Error::invalid("http", format!("cannot start the runtime: {e}")))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| Error::invalid("http", format!("cannot bind {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::invalid("http", e.to_string()))?;
        let (app, watcher) = {
            let _guard = rt.enter();
            build(engine, options)?
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("runledger-http-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(|e| Error::invalid("thread", e.to_string()))?;
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
            watcher,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends open streams, waits for the server thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.watcher.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}
