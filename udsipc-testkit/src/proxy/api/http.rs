//! HTTP/1.1 for the control API: toxiproxy's routes, methods and status
//! codes, on hyper. Each request is parsed into a route and handed to the
//! [`State`](super::state::State); nothing here knows about faults.

use std::convert::Infallible;
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::access::Caller;
use super::state::{ApiError, State};

/// The API's version string (`GET /version`).
pub(crate) const VERSION: &str = concat!("udsipc-testkit ", env!("CARGO_PKG_VERSION"));

/// The largest request body accepted: counted while it is read (chunked or
/// not), so a larger one costs no more than this before its 413.
const MAX_BODY: usize = 1 << 20;

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn too_large() -> Response<Full<Bytes>> {
    json_response(
        413,
        &json!({"error": "request body too large", "status": 413}),
    )
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec(body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

fn text_response(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

fn reply(result: Result<Value, ApiError>, ok: u16) -> Response<Full<Bytes>> {
    match result {
        Ok(v) => json_response(ok, &v),
        Err(e) => json_response(e.status, &e.to_json()),
    }
}

fn reply_empty(result: Result<(), ApiError>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => empty(204),
        Err(e) => json_response(e.status, &e.to_json()),
    }
}

/// Serves one request from `caller` (known on a Unix-socket API).
pub(crate) async fn handle(
    state: Arc<Mutex<State>>,
    caller: Option<Arc<Caller>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let caller = caller.as_deref();
    // toxiproxy refuses browsers (a page must not drive it).
    let browser = request
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Mozilla/"));
    if browser {
        return Ok(text_response(403, "User agent not allowed\n"));
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Ok(too_large()),
        Ok(Err(_)) => return Ok(empty(400)),
        Err(_) => return Ok(empty(408)),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |m: &Method, allowed: &[Method]| allowed.contains(m);
    let mut state = state.lock().await;
    let response = match parts.as_slice() {
        ["version"] if method == Method::GET => json_response(200, &json!({ "version": VERSION })),
        ["reset"] if method == Method::POST => reply_empty(state.reset().await),
        ["populate"] if method == Method::POST => {
            let (status, v) = state.populate(&body, caller).await;
            json_response(status, &v)
        }
        ["proxies"] if method == Method::GET => json_response(200, &state.index()),
        ["proxies"] if method == Method::POST => reply(state.create(&body, caller).await, 201),
        ["proxies", name] if method == Method::GET => reply(state.show(name), 200),
        ["proxies", name] if is(&method, &[Method::POST, Method::PATCH]) => {
            reply(state.update(name, &body, caller).await, 200)
        }
        ["proxies", name] if method == Method::DELETE => reply_empty(state.delete(name).await),
        ["proxies", name, "toxics"] if method == Method::GET => reply(state.toxics(name), 200),
        ["proxies", name, "toxics"] if method == Method::POST => {
            reply(state.add_toxic(name, &body), 200)
        }
        ["proxies", name, "toxics", toxic] if method == Method::GET => {
            reply(state.toxic(name, toxic), 200)
        }
        ["proxies", name, "toxics", toxic] if is(&method, &[Method::POST, Method::PATCH]) => {
            reply(state.update_toxic(name, toxic, &body), 200)
        }
        ["proxies", name, "toxics", toxic] if method == Method::DELETE => {
            reply_empty(state.remove_toxic(name, toxic))
        }
        ["version" | "reset" | "populate" | "proxies"]
        | ["proxies", _]
        | ["proxies", _, "toxics"]
        | ["proxies", _, "toxics", _] => text_response(405, ""),
        _ => text_response(404, "404 page not found\n"),
    };
    Ok(response)
}
