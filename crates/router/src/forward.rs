//! Sending one request to one upstream. A failure before the first byte reaches the client is
//! reported back so the caller can try another upstream; after it, a stream that breaks ends with
//! an error event rather than hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tessera_api::ApiError;

use crate::config::Upstream;
use crate::state::{Slot, UpstreamState};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// Header naming the upstream that answered, for clients and logs.
pub const UPSTREAM_HEADER: &str = "x-tessera-upstream";

/// The result of one attempt.
pub enum Attempt {
    /// A response for the client (success, or the upstream's own 4xx verdict on the request).
    Answered { response: Response, ok: bool },
    /// Nothing reached the client: try another upstream. `counts` is false for an upstream that
    /// said it is busy (429), which is not a fault.
    Failed { why: String, counts: bool },
}

pub struct Call<'a> {
    pub upstream: &'a Upstream,
    pub state: Arc<UpstreamState>,
    pub path: &'a str,
    pub body: Bytes,
    pub stream: bool,
    pub first_byte_timeout: Duration,
    /// The whole request's deadline.
    pub deadline: Instant,
    /// When the request reached the router, for the client-side TTFT.
    pub arrived: Instant,
}

/// What a successful stream reports once its first byte is out: the TTFT the client saw.
pub type OnFirstByte = Box<dyn FnOnce(Duration) + Send>;

pub async fn attempt(client: &HttpClient, call: Call<'_>, on_first_byte: OnFirstByte) -> Attempt {
    let slot = Slot::take(call.state.clone());
    let sent = Instant::now();
    let mut request = hyper::Request::post(format!("{}{}", call.upstream.base_url, call.path))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, if call.stream { "text/event-stream" } else { "application/json" });
    if let Some(key) = &call.upstream.api_key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = match request.body(Full::new(call.body)) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed { why: format!("building the request: {e}"), counts: false },
    };
    let first_byte_by = (sent + call.first_byte_timeout).min(call.deadline);
    let response = match tokio::time::timeout_at(first_byte_by.into(), client.request(request)).await {
        Err(_) => return Attempt::Failed { why: "no response before the timeout".into(), counts: true },
        Ok(Err(e)) => return Attempt::Failed { why: connection_error(&e), counts: true },
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Failed { why: "busy (429)".into(), counts: false };
    }
    if status.is_server_error() {
        return Attempt::Failed { why: format!("answered {status}"), counts: true };
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let mut body = response.into_body();
    if !call.stream || !status.is_success() {
        let whole = match tokio::time::timeout_at(call.deadline.into(), body.collect()).await {
            Err(_) => return Attempt::Failed { why: "no complete answer before the timeout".into(), counts: true },
            Ok(Err(e)) => return Attempt::Failed { why: format!("reading the answer: {e}"), counts: true },
            Ok(Ok(c)) => c.to_bytes(),
        };
        drop(slot);
        let response = respond(status, content_type, &call.upstream.name, Body::from(whole));
        return Attempt::Answered { response, ok: status.is_success() };
    }
    // A stream: wait for its first bytes, so an upstream that dies before them can be replaced.
    let first = match tokio::time::timeout_at(first_byte_by.into(), next_data(&mut body)).await {
        Err(_) => return Attempt::Failed { why: "no first token before the timeout".into(), counts: true },
        Ok(Err(e)) => {
            return Attempt::Failed { why: format!("stream failed before its first byte: {e}"), counts: true }
        }
        Ok(Ok(None)) => return Attempt::Failed { why: "stream ended before its first byte".into(), counts: true },
        Ok(Ok(Some(bytes))) => bytes,
    };
    call.state.record_success(Some(sent.elapsed()));
    on_first_byte(call.arrived.elapsed());
    let relay = Relay { body, slot, upstream: call.upstream.name.clone(), deadline: call.deadline, done: false };
    let rest = stream::unfold(relay, |mut relay| async move {
        if relay.done {
            return None;
        }
        match tokio::time::timeout_at(relay.deadline.into(), next_data(&mut relay.body)).await {
            Ok(Ok(Some(bytes))) => Some((Ok::<Bytes, std::io::Error>(bytes), relay)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                relay.done = true;
                relay.slot.state().failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some((Ok(cut_event(&relay.upstream, &e.to_string())), relay))
            }
            Err(_) => {
                relay.done = true;
                Some((Ok(cut_event(&relay.upstream, "the request timed out")), relay))
            }
        }
    });
    let body = Body::from_stream(stream::once(async move { Ok::<Bytes, std::io::Error>(first) }).chain(rest));
    Attempt::Answered { response: respond(status, content_type, &call.upstream.name, body), ok: true }
}

/// A stream being relayed; its slot is held until the stream ends or the client leaves.
struct Relay {
    body: Incoming,
    slot: Slot,
    upstream: String,
    deadline: Instant,
    done: bool,
}

/// The next data frame of a body (trailers and empty frames skipped); `None` at its end.
async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// The event that ends a stream its upstream broke off (OpenAI's error object as an SSE event).
fn cut_event(upstream: &str, why: &str) -> Bytes {
    let error = ApiError {
        status: 502,
        kind: "server_error",
        message: format!("The upstream {upstream} stopped in the middle of the stream: {why}."),
        param: None,
        code: Some("upstream_stream_cut"),
    };
    Bytes::from(error.to_sse())
}

fn respond(status: StatusCode, content_type: Option<HeaderValue>, upstream: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type.unwrap_or(HeaderValue::from_static("application/json")));
    if let Ok(v) = HeaderValue::from_str(upstream) {
        headers.insert(UPSTREAM_HEADER, v);
    }
    response
}

/// The innermost cause of a client error, which says what actually went wrong (refused, reset).
fn connection_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    format!("connection failed: {last}")
}
