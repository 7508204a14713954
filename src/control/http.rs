//! HTTP routes: the ECS user API on `POST /` and the agent API under /v1/agent. Every state
//! access runs on a blocking thread (a write waits for the store's fsync there, not on the
//! async workers); a long-poll waits on the instance's watch channel without any lock.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::error::ApiError;
use super::state::State;
use super::tls::hash_secret;
use super::{agent_api, ecs};
use crate::proto::{self, MAX_BODY_BYTES};

/// The longest long-poll an agent may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

pub struct Shared {
    pub state: Mutex<State>,
    pub admin_hash: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: memory changes
        // only after the store's commit, so the state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type App = Arc<Shared>;

pub fn router(app: App) -> Router {
    Router::new()
        .route(proto::ECS_API_PATH, post(ecs_api))
        .route(proto::REGISTER_PATH, post(register))
        .route(proto::DESIRED_PATH, get(desired))
        .route(proto::EVENTS_PATH, post(events))
        .route(proto::UTILIZATION_PATH, post(utilization))
        .fallback(|| async { ApiError::with_kind(404, "ClientException", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::with_kind(
                405,
                "ClientException",
                "method not allowed on this endpoint",
            )
        })
        .with_state(app)
}

/// Runs `f` on the state on a blocking thread.
async fn with_state<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&mut State) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&mut app.lock()))
        .await
        .map_err(|e| ApiError::server(format!("request handler failed: {e}")))?
}

fn bearer(h: &HeaderMap) -> Result<&str, ApiError> {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthenticated("Authorization: Bearer <token> is missing"))
}

/// Bodies up to this size are read to their end even when refused, so that the client gets
/// its 413 instead of a connection reset while it is still sending; larger ones are cut off.
const DRAIN_LIMIT: usize = 16 * MAX_BODY_BYTES;
/// A body that stalls longer than this between two chunks is given up.
const BODY_STALL: Duration = Duration::from_secs(30);

/// Reads the body up to MAX_BODY_BYTES (413 beyond).
async fn body(h: &HeaderMap, b: Body) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let declared = h
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(ApiError::too_large());
    }
    let mut stream = b.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = match tokio::time::timeout(BODY_STALL, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::client(format!("reading the body: {e}"))),
            Err(_) => return Err(ApiError::client("the body stalled")),
        };
        total = total.saturating_add(chunk.len());
        if total > DRAIN_LIMIT {
            return Err(ApiError::too_large());
        }
        if total <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::too_large());
    }
    Ok(Bytes::from(buf))
}

fn json<T: Serialize>(v: &T) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::with_kind(
                400,
                "SerializationException",
                format!("malformed JSON: {e}"),
            )
        } else {
            ApiError::invalid(e.to_string())
        }
    })
}

async fn ecs_api(AxState(app): AxState<App>, h: HeaderMap, b: Body) -> Response {
    let r = async {
        let token = bearer(&h)?;
        if hash_secret(token) != app.admin_hash {
            let agent = app.lock().credentials.contains_key(&hash_secret(token));
            return Err(if agent {
                ApiError::forbidden("an instance credential cannot use the user API")
            } else {
                ApiError::unauthenticated("not an admin token of this server")
            });
        }
        let target = h
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(action) = target.strip_prefix(proto::ECS_TARGET_PREFIX) else {
            return Err(ApiError::unknown_operation(target));
        };
        let action = action.to_string();
        let b = body(&h, b).await?;
        with_state(&app, move |s| ecs::dispatch(s, &action, &b)).await
    }
    .await;
    match r {
        Ok(v) => json(&v),
        Err(e) => e.into_response(),
    }
}

/// The instance behind the request's credential (the admin token is no instance: 403).
fn instance(app: &App, s: &State, h: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer(h)?;
    if hash_secret(token) == app.admin_hash {
        return Err(ApiError::forbidden(
            "the admin token is no container instance credential",
        ));
    }
    agent_api::authenticate(s, token)
}

async fn register(AxState(app): AxState<App>, h: HeaderMap, b: Body) -> Response {
    let r = async {
        let b = body(&h, b).await?;
        let req: proto::RegisterRequest = parse(&b)?;
        with_state(&app, move |s| agent_api::register(s, req)).await
    }
    .await;
    match r {
        Ok(v) => json(&v),
        Err(e) => e.into_response(),
    }
}

async fn events(AxState(app): AxState<App>, h: HeaderMap, b: Body) -> Response {
    let r = async {
        let b = body(&h, b).await?;
        let a = app.clone();
        with_state(&app, move |s| {
            let id = instance(&a, s, &h)?;
            let req: proto::EventsRequest = parse(&b)?;
            s.seen(&id);
            agent_api::events(s, &id, req)
        })
        .await
    }
    .await;
    match r {
        Ok(v) => json(&v),
        Err(e) => e.into_response(),
    }
}

async fn utilization(AxState(app): AxState<App>, h: HeaderMap, b: Body) -> Response {
    let r = async {
        let b = body(&h, b).await?;
        let a = app.clone();
        with_state(&app, move |s| {
            let id = instance(&a, s, &h)?;
            let req: proto::UtilizationRequest = parse(&b)?;
            s.seen(&id);
            agent_api::utilization(s, &id, req)
        })
        .await
    }
    .await;
    match r {
        Ok(()) => json(&serde_json::json!({})),
        Err(e) => e.into_response(),
    }
}

/// `version` and `wait` of the desired-set poll.
fn poll_query(q: Option<&str>) -> Result<(u64, u64), ApiError> {
    let (mut version, mut wait) = (0, 0);
    for kv in q.unwrap_or_default().split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let n: u64 = v
            .parse()
            .map_err(|_| ApiError::invalid(format!("{k}: not a number: {v:?}")))?;
        match k {
            "version" => version = n,
            "wait" => wait = n,
            _ => return Err(ApiError::invalid(format!("{k}: unknown query parameter"))),
        }
    }
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid(format!(
            "wait: at most {MAX_WAIT_SECS} seconds"
        )));
    }
    Ok((version, wait))
}

/// Counts the poll as in flight (the instance is connected) until it ends, however it ends.
struct PollGuard {
    app: App,
    id: String,
    armed: bool,
}

fn end_poll(s: &mut State, id: &str) {
    if let Some(l) = s.live.get_mut(id) {
        l.polls = l.polls.saturating_sub(1);
    }
    s.seen(id);
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        // The poll was abandoned (the agent went away) before it could end normally.
        if self.armed {
            end_poll(&mut self.app.lock(), &self.id);
        }
    }
}

async fn desired(AxState(app): AxState<App>, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let r = async {
        let (held, wait) = poll_query(q.as_deref())?;
        let a = app.clone();
        let first = with_state(&app, move |s| {
            let id = instance(&a, s, &h)?;
            s.seen(&id);
            let d = agent_api::desired(s, &id);
            if d.version > held || wait == 0 {
                return Ok(Err(d));
            }
            let live = s
                .live
                .get_mut(&id)
                .expect("every instance has its live entry");
            live.polls += 1;
            Ok(Ok((id, live.notify.subscribe())))
        })
        .await?;
        let (id, mut rx) = match first {
            Err(d) => return Ok(d),
            Ok(x) => x,
        };
        let mut guard = PollGuard {
            app: app.clone(),
            id,
            armed: true,
        };
        let _ = tokio::time::timeout(Duration::from_secs(wait), rx.wait_for(|v| *v > held)).await;
        with_state(&app, move |s| {
            guard.armed = false;
            let id = guard.id.clone();
            end_poll(s, &id);
            if !s.instances.contains_key(&id) {
                return Err(ApiError::forbidden("the instance is gone"));
            }
            Ok(agent_api::desired(s, &id))
        })
        .await
    }
    .await;
    match r {
        Ok(v) => json(&v),
        Err(e) => e.into_response(),
    }
}
