//! A fake OpenAI-compatible upstream that streams a fixed number of chunks, and that can be
//! killed like a crashed process (listener closed, every open connection dropped), plus a small
//! HTTP client for driving the router.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub served: Arc<AtomicU64>,
    kill: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone, Copy)]
pub struct Behaviour {
    /// Chunks per streamed answer, and the pause before each.
    pub chunks: usize,
    pub gap: Duration,
    /// `tessera_queue_depth` reported on `/metrics`.
    pub queue_depth: u32,
}

impl FakeUpstream {
    pub async fn start(name: &str, behaviour: Behaviour) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kill, mut killed) = tokio::sync::watch::channel(false);
        let served = Arc::new(AtomicU64::new(0));
        let (name_owned, served_c) = (name.to_string(), served.clone());
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let (name, served) = (name_owned.clone(), served_c.clone());
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |r| handle(r, name.clone(), behaviour, served.clone()));
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    _ = killed.changed() => {
                        // Like a crashed process: nothing is finished, everything is dropped.
                        connections.abort_all();
                        return;
                    }
                }
            }
        });
        FakeUpstream { addr, name: name.to_string(), served, kill }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(
    request: Request<Incoming>,
    name: String,
    b: Behaviour,
    served: Arc<AtomicU64>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let full = |status: u16, text: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(text)).boxed())
            .unwrap()
    };
    match path.as_str() {
        "/health" => return Ok(full(200, r#"{"status":"ok"}"#.into())),
        "/metrics" => {
            let text = format!("# TYPE tessera_queue_depth gauge\ntessera_queue_depth {}\n", b.queue_depth);
            return Ok(Response::new(Full::new(Bytes::from(text)).boxed()));
        }
        "/v1/chat/completions" | "/v1/completions" => {}
        _ => return Ok(full(404, r#"{"error":{"message":"no such route","type":"invalid_request_error"}}"#.into())),
    }
    let body = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if value.get("max_tokens").and_then(|m| m.as_i64()) == Some(-1) {
        return Ok(full(400, r#"{"error":{"message":"bad request","type":"invalid_request_error"}}"#.into()));
    }
    served.fetch_add(1, Ordering::Relaxed);
    if value.get("stream").and_then(|s| s.as_bool()) != Some(true) {
        tokio::time::sleep(b.gap * b.chunks as u32).await;
        return Ok(full(200, format!(r#"{{"object":"chat.completion","served_by":"{name}","choices":[]}}"#)));
    }
    let frames = futures_util::stream::unfold(0usize, move |i| async move {
        if i > b.chunks {
            return None;
        }
        let text = if i == b.chunks {
            "data: [DONE]\n\n".to_string()
        } else {
            tokio::time::sleep(b.gap).await;
            format!("data: {{\"chunk\":{i}}}\n\n")
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), i + 1))
    });
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();
    Ok(response)
}

/// One request's outcome as a client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub upstream: Option<String>,
    pub body: String,
    /// When the response headers arrived.
    pub headers_at: Instant,
    pub retry_after: Option<String>,
}

/// POSTs `body` to `addr` + `path` with an optional bearer key and reads the whole answer
/// (bounded by `limit`, so a hang fails the test instead of stalling it).
pub async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str, limit: Duration) -> Reply {
    let client = client();
    let mut request = Request::post(format!("http://{addr}{path}")).header("content-type", "application/json");
    if let Some(k) = key {
        request = request.header("authorization", format!("Bearer {k}"));
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let work = async {
        let response = client.request(request).await.expect("the router answers");
        let headers_at = Instant::now();
        let status = response.status().as_u16();
        let header = |n: &str| response.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        let (upstream, retry_after) = (header("x-tessera-upstream"), header("retry-after"));
        let body = match response.into_body().collect().await {
            Ok(c) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
            Err(e) => format!("<client read error: {e}>"),
        };
        Reply { status, upstream, body, headers_at, retry_after }
    };
    tokio::time::timeout(limit, work).await.expect("the request finished in time (no hang)")
}

/// A fleet file over `upstreams` (name, url, cost, region), with `extra` appended.
pub fn fleet_toml(upstreams: &[(&str, String, f64, &str)], extra: &str) -> String {
    let mut text = String::from(
        "[router]\nhealth_interval_ms = 100\neject_after_failures = 1\neject_for_ms = 60000\nretries = 2\n",
    );
    for (name, url, cost, region) in upstreams {
        text.push_str(&format!(
            "[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\nmodels = [\"m\"]\nregion = \"{region}\"\ncost_per_mtok = {cost}\nhardware = \"h20\"\n"
        ));
    }
    text.push_str(extra);
    text
}

/// An HTTP client that sends small writes at once (no Nagle delay).
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}
