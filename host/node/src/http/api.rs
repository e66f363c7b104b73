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
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wallance_core::MemberId;

use crate::daemon::Cmd;
use crate::metrics::Metrics;
use crate::view::SharedView;

#[derive(Clone)]
struct Api {
    view: SharedView,
    tx: Sender<Cmd>,
    token: Option<String>,
    metrics: Arc<Metrics>,
    contracts_dir: Option<PathBuf>,
}

/// Starts the API on its own thread with a small tokio runtime.
pub fn spawn(
    listen: SocketAddr,
    token: Option<String>,
    view: SharedView,
    tx: Sender<Cmd>,
    contracts_dir: Option<PathBuf>,
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
        .route("/", get(crate::dashboard::page))
        .route("/assets/dashboard.css", get(crate::dashboard::style))
        .route("/assets/dashboard.js", get(crate::dashboard::script))
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
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn view(State(api): State<Api>) -> Response {
    Json((*api.view.get()).clone()).into_response()
}

async fn status(State(api): State<Api>) -> Response {
    let v = api.view.get();
    Json(json!({
        "me": v.me, "id": v.id, "uptime_s": v.uptime_s, "members": v.members, "quorum": v.quorum,
        "pending": v.pending.len(), "peers": v.peers, "stats": v.stats,
        "services": v.services.len(), "contracts": v.contracts,
        "contracts_dir": api.contracts_dir.as_ref().map(|d| d.display().to_string()),
        "token_configured": api.token.is_some(),
    }))
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

/// Where a purchase is: pending, committed, and the contract's outcome.
async fn purchase(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let v = api.view.get();
    let id = id.to_lowercase();
    let pending = v.pending.iter().find(|p| p.request_id == id);
    let commit = v.commits.iter().find(|c| c.request_id == id);
    let outcome = v.outcomes.iter().find(|o| o.request_id == id);
    let status = match (pending, commit, outcome) {
        (_, _, Some(_)) => "done",
        (_, Some(_), None) => "committed",
        (Some(_), None, None) => "pending",
        (None, None, None) => return error(StatusCode::NOT_FOUND, format!("no purchase {id} known here")),
    };
    Json(json!({ "request_id": id, "status": status, "commit": commit, "outcome": outcome })).into_response()
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
    if body.service.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "malformed request: service is empty");
    }
    if let Some(k) = body.params.keys().find(|k| k.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("malformed request: parameter name {k:?} is empty"),
        );
    }
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
    let offers: Vec<_> = v
        .services
        .iter()
        .filter(|s| s.name == body.service && provider.is_none_or(|p| p.to_hex() == s.provider_id))
        .collect();
    let listed = match offers.as_slice() {
        [] => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no provider offers service {:?}", body.service),
            );
        }
        [one] => one.price,
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.provider.as_str()).collect();
            return error(
                StatusCode::CONFLICT,
                format!(
                    "{} providers offer service {:?} ({}): name the one to buy from (\"provider\")",
                    many.len(),
                    body.service,
                    names.join(", ")
                ),
            );
        }
    };
    if body.price < listed {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "price {} is below the listed price {}",
                dcoin(body.price),
                dcoin(listed)
            ),
        );
    }
    // The core checks again (it is the authority); this answer names DCoin.
    // A purchase costs its price plus the voter reward.
    let cost = body.price.saturating_add(v.reward_units);
    if let Some(me) = v.wallets.iter().find(|w| w.id == v.id)
        && me.spendable < cost
    {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "insufficient balance: {} spendable, the purchase costs {} (price {} plus voter reward {})",
                dcoin(me.spendable),
                dcoin(cost),
                dcoin(body.price),
                dcoin(v.reward_units)
            ),
        );
    }
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
        Ok(Err(e)) if e.contains("insufficient") => error(StatusCode::PAYMENT_REQUIRED, e),
        Ok(Err(e)) if e.contains("pending") => error(StatusCode::CONFLICT, e),
        Ok(Err(e)) if e.contains("no provider offers") => error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) if e.contains("providers offer service") => error(StatusCode::CONFLICT, e),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}
