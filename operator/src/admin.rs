//! The admin endpoint (plain HTTP): `/healthz` (the process serves and none of its critical
//! tasks has ended: a pod whose engine or writer died must be restarted, not look healthy),
//! `/readyz` (this replica leads and ingests: followers are not ready, so the Service routes
//! sniffers to the leader), and `/metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Whether this replica is ready to take reports.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The critical tasks of the process: one that ends before shutdown (returns, or panics) makes
/// `/healthz` fail.
#[derive(Debug, Default)]
pub struct Liveness {
    stopping: AtomicBool,
    ended: Mutex<Vec<&'static str>>,
}

impl Liveness {
    /// `task`, watched: if it ends before [`Liveness::stopping`], the process is unhealthy.
    pub fn watch<F: Future>(
        self: &Arc<Self>,
        name: &'static str,
        task: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        let guard = TaskGuard {
            liveness: Arc::clone(self),
            name,
        };
        async move {
            let _guard = guard;
            task.await
        }
    }

    /// From now on tasks end because the process stops: that is healthy.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The critical tasks that ended before shutdown.
    pub fn ended(&self) -> Vec<&'static str> {
        self.ended.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Held by a watched task; its drop (the task returned, panicked or was dropped) is recorded.
struct TaskGuard {
    liveness: Arc<Liveness>,
    name: &'static str,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.liveness.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            task = self.name,
            "a critical task ended; /healthz now fails"
        );
        if let Ok(mut ended) = self.liveness.ended.lock() {
            ended.push(self.name);
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoint until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(AdminState {
        readiness,
        liveness,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    let ended = state.liveness.ended();
    if ended.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("critical task(s) ended: {}\n", ended.join(", ")),
        )
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not leading (or not started)\n",
        )
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn healthz_status(liveness: &Arc<Liveness>) -> StatusCode {
        let app = router(AdminState {
            readiness: Arc::default(),
            liveness: Arc::clone(liveness),
            metrics: Arc::new(Metrics::new()),
        });
        let request = Request::get("/healthz")
            .body(Body::empty())
            .expect("request");
        app.oneshot(request).await.expect("answer").status()
    }

    #[tokio::test]
    async fn healthz_fails_once_a_critical_task_has_ended_before_shutdown() {
        let liveness = Arc::new(Liveness::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(liveness.watch("writer", async move {
            let _ = rx.await;
        }));
        assert_eq!(healthz_status(&liveness).await, StatusCode::OK);
        let _ = tx.send(());
        writer.await.expect("joined");
        assert_eq!(
            healthz_status(&liveness).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(liveness.ended(), ["writer"]);
    }

    #[tokio::test]
    async fn a_panicking_task_counts_and_tasks_ending_at_shutdown_do_not() {
        let liveness = Arc::new(Liveness::default());
        let engine = tokio::spawn(liveness.watch("engine", async { panic!("engine bug") }));
        assert!(engine.await.is_err());
        assert_eq!(liveness.ended(), ["engine"]);

        let calm = Arc::new(Liveness::default());
        calm.stopping();
        calm.watch("ingest", async {}).await;
        assert_eq!(healthz_status(&calm).await, StatusCode::OK);
    }
}
