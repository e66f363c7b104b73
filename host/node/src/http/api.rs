//! The node's HTTP API (JSON), live updates (server-sent events) and the
//! dashboard. Listens on localhost by default; every call that changes
//! state needs the node's `api_token` as `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wallance_core::msg::BuildError;
use wallance_core::{BuyError, MemberId};
use wallance_store::StoreReader;

use super::metrics::Metrics;
use super::view::{PurchaseCommit, PurchaseStatus, PurchaseView, SharedView, StatusView};
use crate::cmd::Cmd;

#[derive(Clone)]
struct Api {
    view: SharedView,
    tx: Sender<Cmd>,
    token: Option<String>,
    metrics: Arc<Metrics>,
    contracts_dir: Option<PathBuf>,
    /// The store's committed purchase records.
    store: Option<StoreReader>,
}

/// Starts the API on its own thread with a small tokio runtime.
pub fn spawn(
    listen: SocketAddr,
    token: Option<String>,
    view: SharedView,
    tx: Sender<Cmd>,
    contracts_dir: Option<PathBuf>,
    store: Option<StoreReader>,
) -> anyhow::Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen for the API on {listen}"))?;
    listener.set_nonblocking(true)?;
    let api = Api {
        view,
        tx,
        token: token.filter(|t| !t.is_empty()),
        metrics: Arc::new(Metrics::default()),
        contracts_dir,
        store,
    };
    std::thread::Builder::new().name("api".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("API runtime failed to start: {e}");
                return;
            }
        };
        rt.block_on(async move {
            tokio::spawn(api.metrics.clone().follow(api.view.clone()));
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("API listener: {e}");
                    return;
                }
            };
            if let Err(e) = axum::serve(listener, router(api)).await {
                tracing::error!("API server stopped: {e}");
            }
        });
    })?;
    Ok(())
}

/// A purchase is a service name, a price and a few parameters.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/assets/dashboard.css", get(super::dashboard::style))
        .route("/assets/dashboard.js", get(super::dashboard::script))
        .route("/api/view", get(view))
        .route("/api/status", get(status))
        .route("/api/wallets", get(wallets))
        .route("/api/pending", get(pending))
        .route("/api/commits", get(commits))
        .route("/api/services", get(services))
        .route("/api/contracts", get(contracts))
        .route("/api/outcomes", get(outcomes))
        .route("/api/produced", get(produced))
        .route("/api/purchases/{id}", get(purchase))
        .route("/api/events", get(events))
        .route("/api/buy", post(buy))
        .route("/api/{*rest}", any(no_such_endpoint))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn no_such_endpoint(Path(rest): Path<String>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no endpoint /api/{rest}: see /api/view, /api/status, /api/wallets, /api/services"),
    )
}

async fn metrics(State(api): State<Api>) -> Response {
    let text = api.metrics.render(&api.view.get());
    ([(axum::http::header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

async fn view(State(api): State<Api>) -> Response {
    Json((*api.view.get()).clone()).into_response()
}

async fn status(State(api): State<Api>) -> Response {
    let v = api.view.get();
    Json(StatusView {
        me: v.me.clone(),
        id: v.id.clone(),
        uptime_s: v.uptime_s,
        members: v.members,
        quorum: v.quorum,
        pending: v.pending.len(),
        peers: v.peers.clone(),
        stats: v.stats.clone(),
        services: v.services.len(),
        contracts: v.contracts.clone(),
        contracts_dir: api.contracts_dir.as_ref().map(|d| d.display().to_string()),
        token_configured: api.token.is_some(),
    })
    .into_response()
}

async fn wallets(State(api): State<Api>) -> Response {
    Json(api.view.get().wallets.clone()).into_response()
}
async fn pending(State(api): State<Api>) -> Response {
    Json(api.view.get().pending.clone()).into_response()
}
async fn commits(State(api): State<Api>) -> Response {
    Json(api.view.get().commits.clone()).into_response()
}
async fn services(State(api): State<Api>) -> Response {
    Json(api.view.get().services.clone()).into_response()
}
async fn contracts(State(api): State<Api>) -> Response {
    Json(api.view.get().contracts.clone()).into_response()
}
async fn outcomes(State(api): State<Api>) -> Response {
    Json(api.view.get().outcomes.clone()).into_response()
}

/// The outcomes this node produced as a provider, with the contracts' logs.
async fn produced(State(api): State<Api>) -> Response {
    Json(api.view.get().produced.clone()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    /// Seconds to wait for the outcome or the verdict (at most 60).
    #[serde(default)]
    wait: u64,
}

/// The longest a long poll is held open.
const WAIT_MAX_S: u64 = 60;

/// Where a purchase is: its record if this node made or served it (kept in
/// the store across restarts), else what the view shows of it. With
/// `?wait=<s>` the answer comes as soon as the outcome or the verdict is
/// committed here, or when the wait ends.
async fn purchase(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "malformed query: use ?wait=<seconds>");
    };
    let id_text = id.to_lowercase();
    let Some(id) = hex::decode(&id_text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id_text:?} is not a purchase id (64 hex digits)"),
        );
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(query.wait.min(WAIT_MAX_S));
    let mut changes = api.view.purchases.subscribe();
    loop {
        changes.borrow_and_update();
        let found = match recorded(&api, &id) {
            Ok(found) => found.or_else(|| seen(&api, &id_text)),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let finished = found.as_ref().is_some_and(PurchaseView::finished);
        if finished || tokio::time::Instant::now() >= deadline {
            return match found {
                Some(p) => Json(p).into_response(),
                None => error(StatusCode::NOT_FOUND, format!("no purchase {id_text} known here")),
            };
        }
        // Woken by the loop as soon as purchase records are committed.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
        }
    }
}

/// The record of a purchase this node made or served.
fn recorded(api: &Api, id: &[u8; 32]) -> Result<Option<PurchaseView>, String> {
    let Some(store) = &api.store else {
        return Ok(None);
    };
    let Some(bytes) = store.purchase(id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("unreadable purchase record: {e}"))
}

/// Another member's purchase, as far as the view shows it.
fn seen(api: &Api, id: &str) -> Option<PurchaseView> {
    let v = api.view.get();
    if let Some(c) = v.commits.iter().find(|c| c.request_id == id) {
        return Some(PurchaseView {
            request_id: c.request_id.clone(),
            status: PurchaseStatus::Committed,
            service: c.service.clone(),
            provider: c.provider.clone(),
            provider_id: c.provider_id.clone(),
            requester: c.requester.clone(),
            requester_id: c.requester_id.clone(),
            price: c.price,
            commit: Some(PurchaseCommit {
                version: c.version,
                at_ms: c.at_ms,
                latency_ms: c.latency_ms,
                from_certificate: c.from_certificate,
            }),
            ..PurchaseView::default()
        });
    }
    let p = v.pending.iter().find(|p| p.request_id == id)?;
    Some(PurchaseView {
        request_id: p.request_id.clone(),
        status: PurchaseStatus::Pending,
        service: p.service.clone(),
        requester: p.requester.clone(),
        price: p.price,
        ..PurchaseView::default()
    })
}

/// Server-sent events: the whole view each time it changes.
async fn events(State(api): State<Api>) -> Sse<impl futures_core::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = api.view.version.subscribe();
    let hub = api.view.clone();
    let stream = async_stream::stream! {
        loop {
            let v = hub.get();
            if let Ok(data) = serde_json::to_string(&*v) {
                yield Ok(SseEvent::default().event("view").data(data));
            }
            // Coalesce bursts: at most ten updates a second per listener.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if rx.changed().await.is_err() {
                break;
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyBody {
    service: String,
    price: u64,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// The refusal for a call without the right token, if it must be refused.
fn unauthorized(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &api.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "this node has no api_token configured: state-changing calls are disabled",
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match given {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <api_token>",
        )),
        Some(t) if !same_secret(t.trim().as_bytes(), token.as_bytes()) => {
            Some(error(StatusCode::UNAUTHORIZED, "wrong token"))
        }
        Some(_) => None,
    }
}

/// An amount for people: DCoin, with the units it came as.
fn dcoin(units: u64) -> String {
    let per = wallance_core::UNITS_PER_COIN;
    let text = format!("{}.{:06}", units / per, units % per);
    let keep = text.trim_end_matches('0').len().max(text.len() - 4);
    format!("{} DCoin ({units} units)", &text[..keep])
}

/// The HTTP status and text for the core's refusal of a purchase, from its
/// type (amounts in DCoin, members by name).
fn refusal(e: &BuyError, v: &super::view::View) -> (StatusCode, String) {
    let name = |id: &MemberId| {
        let hex = id.to_hex();
        v.wallets
            .iter()
            .find(|w| w.id == hex)
            .map_or_else(|| id.short(), |w| w.name.clone())
    };
    match e {
        BuyError::UnknownService(service) => (StatusCode::NOT_FOUND, format!("no provider offers service {service:?}")),
        BuyError::AmbiguousService { service, providers } => (
            StatusCode::CONFLICT,
            format!(
                "{} providers offer service {service:?} ({}): name the one to buy from (\"provider\")",
                providers.len(),
                providers.iter().map(name).collect::<Vec<_>>().join(", ")
            ),
        ),
        BuyError::PriceTooLow { offered, listed } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("price {} is below the listed price {}", dcoin(*offered), dcoin(*listed)),
        ),
        BuyError::InsufficientBalance { available, cost } => (
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "insufficient balance: {} spendable, the purchase costs {} (price plus voter reward {})",
                dcoin(*available),
                dcoin(*cost),
                dcoin(v.reward_units)
            ),
        ),
        BuyError::Pending => (
            StatusCode::CONFLICT,
            "a purchase is already pending on this wallet's State: wait for it to commit".into(),
        ),
        BuyError::NotMember => (StatusCode::FORBIDDEN, e.to_string()),
        BuyError::Build(BuildError::ServiceName | BuildError::Params | BuildError::ParamName) => {
            (StatusCode::BAD_REQUEST, format!("malformed request: {e}"))
        }
        BuyError::Build(BuildError::Work) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        // `BuyError` may grow: a refusal this node does not know is still
        // the client's to fix.
        _ => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell an attacker how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn buy(State(api): State<Api>, headers: HeaderMap, body: Result<Json<BuyBody>, JsonRejection>) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {BODY_LIMIT_BYTES} bytes"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed request: {}", e.body_text())),
    };
    // Names are the node's configuration; every other check is the core's.
    let v = api.view.get();
    let provider = match &body.provider {
        None => None,
        Some(p) => match MemberId::from_hex(p).or_else(|| {
            v.wallets
                .iter()
                .find(|w| &w.name == p)
                .and_then(|w| MemberId::from_hex(&w.id))
        }) {
            Some(id) => Some(id),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown provider {p:?}")),
        },
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let cmd = Cmd::Buy {
        service: body.service,
        provider,
        price: body.price,
        params: body.params.into_iter().collect(),
        reply,
    };
    if api.tx.send(cmd).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    match rx.await {
        Ok(Ok(id)) => {
            let id = hex::encode(id);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "request_id": id, "follow": format!("/api/purchases/{id}") })),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let (status, message) = refusal(&e, &v);
            error(status, message)
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}
