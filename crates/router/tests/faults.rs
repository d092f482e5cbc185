//! The router under load over three local upstreams, one of which is killed mid-run: every
//! request that had not started streaming from it succeeds on another; the streams it cut end
//! with an error event, never a hang; and it is ejected so later requests avoid it.

mod common;

use std::time::{Duration, Instant};

use common::{fleet_toml, post, Behaviour, FakeUpstream};
use tessera_router::FleetConfig;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_upstream_loses_no_request_that_had_not_started_streaming() {
    let behaviour = Behaviour { chunks: 10, gap: Duration::from_millis(20), queue_depth: 0 };
    let ups = [
        FakeUpstream::start("a", behaviour).await,
        FakeUpstream::start("b", behaviour).await,
        FakeUpstream::start("c", behaviour).await,
    ];
    let list: Vec<(&str, String, f64, &str)> = ups.iter().map(|u| (u.name.as_str(), u.url(), 0.1, "us")).collect();
    let fleet = FleetConfig::parse(&fleet_toml(&list, ""), "test", &|_| None).unwrap();
    let router = tessera_router::start(fleet, "127.0.0.1:0", None).await.unwrap();
    let addr = router.addr;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..90 {
        // Distinct prompts spread over the upstreams; a third are not streamed.
        let stream = i % 3 != 0;
        let body =
            format!(r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"question {i}"}}]}}"#);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            (stream, post(addr, "/v1/chat/completions", None, &body, LIMIT).await)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    ups[1].kill();
    let killed_at = Instant::now();
    let mut cut = 0;
    let mut after_kill_on = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        let (stream, reply) = task.await.unwrap();
        let upstream = reply.upstream.clone().unwrap_or_default();
        if reply.headers_at > killed_at + Duration::from_millis(50) {
            *after_kill_on.entry(upstream.clone()).or_default() += 1;
        }
        let complete = reply.status == 200
            && if stream { reply.body.ends_with("data: [DONE]\n\n") } else { reply.body.contains("served_by") };
        if complete {
            continue;
        }
        // The only acceptable failure: a stream that was already coming from b when it died,
        // which must end with an error event naming the cut.
        assert!(stream && upstream == "b" && reply.headers_at <= killed_at, "lost a request: {reply:?}");
        assert!(reply.body.contains("\"code\":\"upstream_stream_cut\""), "a cut stream must say so: {reply:?}");
        cut += 1;
    }
    // Requests answered after the kill went to the survivors only.
    assert!(!after_kill_on.contains_key("b"), "{after_kill_on:?}");
    assert!(after_kill_on.values().sum::<usize>() > 10, "the test must route many requests after the kill");
    assert!(started.elapsed() < LIMIT);
    eprintln!("cut streams: {cut}; answered after the kill by {after_kill_on:?}");

    let metrics = post_metrics(addr).await;
    assert!(metrics.contains("tessera_route_upstream_available{upstream=\"b\"} 0"), "{metrics}");
    assert!(metrics.contains("tessera_route_upstream_available{upstream=\"a\"} 1"), "{metrics}");
    router.shutdown().await.unwrap();
}

async fn post_metrics(addr: std::net::SocketAddr) -> String {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = client.get(format!("http://{addr}/metrics").parse().unwrap()).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_fleet_gives_a_clear_error_and_a_busy_one_is_spread() {
    // One upstream that never existed (a closed port) and one that works.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let live =
        FakeUpstream::start("live", Behaviour { chunks: 2, gap: Duration::from_millis(1), queue_depth: 0 }).await;
    let fleet_text = fleet_toml(&[("dead", dead.clone(), 0.01, "us"), ("live", live.url(), 1.0, "us")], "");
    let fleet = FleetConfig::parse(&fleet_text, "test", &|_| None).unwrap();
    let router = tessera_router::start(fleet, "127.0.0.1:0", None).await.unwrap();
    // The cheap one is dead: the request is retried on the live one before any byte is sent.
    let body = r#"{"model":"m","stream":true,"prompt":"hi"}"#;
    let reply = post(router.addr, "/v1/completions", None, body, LIMIT).await;
    assert_eq!((reply.status, reply.upstream.as_deref()), (200, Some("live")), "{reply:?}");
    // A bad request is the client's fault: passed through, not retried.
    let reply = post(router.addr, "/v1/completions", None, r#"{"model":"m","max_tokens":-1}"#, LIMIT).await;
    assert_eq!((reply.status, reply.upstream.as_deref()), (400, Some("live")), "{reply:?}");
    assert!(reply.body.contains("bad request"), "the upstream's own error: {}", reply.body);
    let reply = post(router.addr, "/v1/completions", None, r#"{"model":"gpt-9"}"#, LIMIT).await;
    assert_eq!(reply.status, 404, "no upstream serves gpt-9: {reply:?}");
    live.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = post(router.addr, "/v1/completions", None, body, LIMIT).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("No permitted upstream can take a request"), "{}", reply.body);
    assert!(reply.body.contains("dead: ") && reply.body.contains("live: "), "{}", reply.body);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    router.shutdown().await.unwrap();
}
