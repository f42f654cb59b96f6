//! HTTP for hosts in any language and for browsers (feature `http`): [`router`] mounts the
//! Trust UI ([`ui`]) at `/`.
//!
//! ```no_run
//! # async fn serve(engine: runledger::Engine) -> std::io::Result<()> {
//! let app = runledger::http::router(engine, runledger::http::ui::UiOptions::from_env());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8750").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod ui;

use crate::engine::Engine;

/// Everything runledger serves over HTTP for `engine`.
pub fn router(engine: Engine, options: ui::UiOptions) -> axum::Router {
    axum::Router::new().merge(ui::router(engine, options))
}
