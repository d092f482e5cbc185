//! What the router adds to time to first token: an open-loop load at a fixed rate against a fake
//! upstream that answers at once, each request sent either straight to the upstream or through
//! the router, alternating, so both see the same machine noise in the same run.
//!
//!   cargo run --release -p tessera-router --example route_overhead -- [RATE] [SECONDS]
//!
//! Prints p50/p99 TTFT of each path and the difference, then checks the targets (router adds at
//! most 1 ms at p50 and 5 ms at p99); exits 1 when one is missed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Behaviour, FakeUpstream};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use tessera_router::FleetConfig;

const BODY: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Say hi."}]}"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500.0);
    let seconds: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10.0);

    // The first chunk comes at once; the stream then ends after a second chunk.
    let upstream = FakeUpstream::start("fast", Behaviour { chunks: 2, gap: Duration::ZERO, queue_depth: 0 }).await;
    let fleet_text = format!(
        "[[upstream]]\nname = \"fast\"\nurl = \"{}\"\nmodels = [\"m\"]\nregion = \"local\"\ncost_per_mtok = 0.1\n\
         max_concurrency = 100000\n",
        upstream.url()
    );
    let fleet = FleetConfig::parse(&fleet_text, "bench", &|_| None).expect("fleet");
    let router = tessera_router::start(fleet, "127.0.0.1:0", None).await.expect("router");
    let direct = format!("{}/v1/chat/completions", upstream.url());
    let routed = format!("http://{}/v1/chat/completions", router.addr);
    let client = common::client();

    // Warm both paths' connection pools.
    for url in [&direct, &routed].into_iter().cycle().take(200) {
        ttft(&client, url).await;
    }

    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        // Open loop: each request leaves at its scheduled time whether or not others finished.
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (client, url) = (client.clone(), if i % 2 == 0 { direct.clone() } else { routed.clone() });
        tasks.push(tokio::spawn(async move { (i % 2 == 1, ttft(&client, &url).await) }));
    }
    let (mut straight, mut through) = (Vec::new(), Vec::new());
    for t in tasks {
        let (via_router, ms) = t.await.expect("task");
        if via_router {
            through.push(ms)
        } else {
            straight.push(ms)
        }
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    straight.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&straight, 0.5), percentile(&straight, 0.99));
    let (r50, r99) = (percentile(&through, 0.5), percentile(&through, 0.99));
    println!("{total} streamed requests at {rate:.0} req/s offered ({achieved:.0} achieved), half through the router");
    println!("{:<16} {:>9} {:>9}", "TTFT (ms)", "p50", "p99");
    println!("{:<16} {:>9.3} {:>9.3}", "direct", d50, d99);
    println!("{:<16} {:>9.3} {:>9.3}", "through router", r50, r99);
    println!("{:<16} {:>9.3} {:>9.3}", "router adds", r50 - d50, r99 - d99);
    println!("{:<16} {:>9.2} {:>9.2}", "ratio", r50 / d50, r99 / d99);
    let ok = r50 - d50 <= 1.0 && r99 - d99 <= 5.0;
    println!("target (adds <= 1 ms p50, <= 5 ms p99): {}", if ok { "met" } else { "MISSED" });
    router.shutdown().await.expect("shutdown");
    std::process::exit(if ok { 0 } else { 1 });
}

/// Milliseconds from sending the request to the first body bytes.
async fn ttft(client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>, url: &str) -> f64 {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("request");
    let sent = Instant::now();
    let response = client.request(request).await.expect("response");
    let mut body = response.into_body();
    let first = loop {
        match body.frame().await {
            Some(Ok(f)) if f.is_data() => break sent.elapsed(),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("stream failed: {e}"),
            None => panic!("stream ended without data"),
        }
    };
    // Drain the rest so the connection goes back to the pool.
    while let Some(f) = body.frame().await {
        f.expect("stream");
    }
    first.as_secs_f64() * 1e3
}
