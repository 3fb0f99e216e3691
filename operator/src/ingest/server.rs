//! The report endpoint: authenticate first (TokenReview, cached), then read a size- and
//! time-limited body, parse and validate it, and hand it to the engine. Nothing a client sends
//! can crash the operator: every failure is an HTTP status and a counted reason.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use trafficmap_api::Report;
use trafficmap_api::report::INGEST_PATH;

use super::auth::{Rejection, TokenCache, bearer_token, decide, jwt_expiry_unix_seconds};
use crate::durable::{Hold, Outcome};
use crate::metrics::{Metrics, ReasonLabel};
use crate::now_ms;

/// How long a client has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send its body once authenticated, unless configured otherwise.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the ingest endpoint.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// How long an authenticated client has to send its body (default [`BODY_READ_TIMEOUT`]).
    pub body_read_timeout: Duration,
    /// The username TokenReview must return (`system:serviceaccount:<ns>:<name>`).
    pub sniffer_username: String,
    /// The audience tokens must be issued for.
    pub audience: String,
    /// Longest a request waits for its changes to be written before a 503 (send again).
    pub ack_timeout: Duration,
}

/// A report as it reached the operator.
#[derive(Debug)]
pub struct ReceivedReport {
    /// The validated report.
    pub report: Report,
    /// When it arrived, ms since the epoch.
    pub received_ms: u64,
    /// Released when what the report changed is written; `None` when no one waits.
    pub hold: Option<Hold>,
}

struct Ingest {
    config: IngestConfig,
    client: Client,
    cache: Mutex<TokenCache>,
    reports: mpsc::Sender<ReceivedReport>,
    metrics: Arc<Metrics>,
}

/// How long open requests may go on after `shutdown`: they wait for their reports' statuses,
/// which the engine's drain and the writer's last writes bring (see `engine::Stop`).
const OPEN_REQUESTS_GRACE: Duration = Duration::from_secs(15);

/// Serves the endpoint on `listener` until `shutdown`, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: IngestConfig,
    client: Client,
    reports: mpsc::Sender<ReceivedReport>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let state = Arc::new(Ingest {
        config,
        client,
        cache: Mutex::new(TokenCache::default()),
        reports,
        metrics,
    });
    let app = Router::new()
        .route(INGEST_PATH, post(post_report))
        .with_state(state);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "ingest accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(
                TokioIo::new(tls_stream),
                TowerToHyperService::new(app.into_service::<hyper::body::Incoming>()),
            );
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, %err, "ingest connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(OPEN_REQUESTS_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("ingest connections still open after {OPEN_REQUESTS_GRACE:?}; closing");
    }
}

async fn post_report(State(state): State<Arc<Ingest>>, request: Request) -> Response {
    match accept(&state, request).await {
        Ok(count) => {
            state.metrics.reports_accepted.inc();
            state.metrics.observations.inc_by(count as u64);
            (StatusCode::ACCEPTED, format!("{{\"accepted\":{count}}}\n")).into_response()
        }
        Err((status, reason, message)) => {
            state
                .metrics
                .reports_rejected
                .get_or_create(&ReasonLabel::new(reason))
                .inc();
            tracing::debug!(reason, %message, "report rejected");
            (status, format!("{message}\n")).into_response()
        }
    }
}

type Refusal = (StatusCode, &'static str, String);

async fn accept(state: &Ingest, request: Request) -> Result<usize, Refusal> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(header).map_err(refuse)?.to_string();
    authenticate(state, &token).await.map_err(refuse)?;

    let body: Body = request.into_body();
    let limit = state.config.max_body_bytes;
    let timeout = state.config.body_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("body not received within {timeout:?}"),
            ));
        }
        Ok(Err(_)) => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body over {limit} bytes, or cut off"),
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let report = Report::from_json(&bytes)
        .map_err(|err| (StatusCode::BAD_REQUEST, "malformed", err.to_string()))?;
    // The request now waits for its edges to be written, up to the ack timeout: without its
    // body (up to --max-body-bytes), which every sniffer's outstanding report would hold.
    drop(bytes);
    let count = report.observations.len();
    let (hold, receipt) = Hold::new();
    let received = ReceivedReport {
        report,
        received_ms: now_ms(),
        hold: Some(hold),
    };
    state.reports.try_send(received).map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the operator is busy; retry later".to_string(),
        )
    })?;
    // A 202 means written: what is not acknowledged, the sniffer sends again.
    let waited = Instant::now();
    let outcome = tokio::time::timeout(state.config.ack_timeout, receipt.outcome()).await;
    state
        .metrics
        .ack_wait_seconds
        .observe(waited.elapsed().as_secs_f64());
    match outcome {
        Ok(Outcome::Written) => Ok(count),
        Ok(Outcome::NotWritten) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "not_written",
            "the report's changes could not be written; send it again".to_string(),
        )),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "write_pending",
            format!(
                "the report's changes were not written within {:?}; send it again",
                state.config.ack_timeout
            ),
        )),
    }
}

fn refuse(rejection: Rejection) -> Refusal {
    let status = StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let message = match rejection {
        Rejection::MissingToken => "a bearer token is required",
        Rejection::NotAuthenticated => "the token was not accepted",
        Rejection::WrongAudience => "the token is not for this audience",
        Rejection::WrongIdentity => "this identity may not post reports",
        Rejection::ReviewFailed => "the token could not be reviewed; retry later",
    };
    (status, rejection.label(), message.to_string())
}

/// Asks the cache, else the API server's TokenReview, whether `token` is the sniffer's.
async fn authenticate(state: &Ingest, token: &str) -> Result<(), Rejection> {
    let now = Instant::now();
    if let Some(verdict) = state.cache.lock().ok().and_then(|c| c.get(token, now)) {
        return verdict;
    }
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![state.config.audience.clone()]),
        },
        ..TokenReview::default()
    };
    let verdict = match Api::<TokenReview>::all(state.client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(reviewed) => match reviewed.status {
            Some(status) => decide(
                &status,
                &state.config.sniffer_username,
                &state.config.audience,
            ),
            None => Err(Rejection::NotAuthenticated),
        },
        Err(err) => {
            tracing::warn!(%err, "TokenReview failed");
            Err(Rejection::ReviewFailed)
        }
    };
    let expires_in = jwt_expiry_unix_seconds(token).map(|exp| {
        let left = exp.saturating_sub((now_ms() / 1000) as i64);
        Duration::from_secs(left.max(0) as u64)
    });
    if let Ok(mut cache) = state.cache.lock() {
        cache.insert(token, verdict, expires_in, now);
    }
    verdict
}
