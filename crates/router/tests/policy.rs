//! Tenants end to end: keys, policy (a request no permitted upstream can serve is refused, never
//! sent to a forbidden one), rate limits, the models each tenant sees, and a config reload that
//! applies without a restart.

mod common;

use std::time::Duration;

use common::{post, Behaviour, FakeUpstream};
use tessera_router::FleetConfig;

const LIMIT: Duration = Duration::from_secs(20);
const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn fleet_text(us_gpu: &str, eu_cpu: &str, extra: &str) -> String {
    format!(
        r#"
[router]
health_interval_ms = 100

[[upstream]]
name = "us-gpu"
url = "{us_gpu}"
models = ["m"]
hardware = "h100-sxm"
region = "us"
cost_per_mtok = 0.5

[[upstream]]
name = "eu-cpu"
url = "{eu_cpu}"
models = ["m", "small"]
hardware = "cpu-2x-epyc-9654"
region = "eu"
cost_per_mtok = 0.1

[[tenant]]
name = "eu-bank"
api_keys = ["key-eu"]
allowed_regions = ["eu"]

[[tenant]]
name = "us-lab"
api_keys = ["key-us"]
rule_set = "us-2025-01"
allowed_classes = ["3A090.a"]
rate_limit_rps = 0.5
rate_limit_burst = 2

[[tenant]]
name = "us-strict"
api_keys = ["key-strict"]
allowed_regions = ["us"]
rule_set = "us-2025-01"
allowed_classes = ["not-controlled"]
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_reach_only_what_their_policy_allows() {
    let b = Behaviour { chunks: 1, gap: Duration::from_millis(1), queue_depth: 0 };
    let (us, eu) = (FakeUpstream::start("us-gpu", b).await, FakeUpstream::start("eu-cpu", b).await);
    let fleet = FleetConfig::parse(&fleet_text(&us.url(), &eu.url(), ""), "test", &|_| None).unwrap();
    let router = tessera_router::start(fleet, "127.0.0.1:0", None).await.unwrap();
    let ask =
        |key: Option<&'static str>, body: &'static str| post(router.addr, "/v1/chat/completions", key, body, LIMIT);

    for _ in 0..5 {
        let r = ask(Some("key-eu"), CHAT).await;
        assert_eq!((r.status, r.upstream.as_deref()), (200, Some("eu-cpu")), "{r:?}");
    }
    // us-lab may use the controlled H100 only; the cheaper EU CPU is not in its classes.
    let r = ask(Some("key-us"), CHAT).await;
    assert_eq!((r.status, r.upstream.as_deref()), (200, Some("us-gpu")), "{r:?}");
    // us-strict: US region and uncontrolled hardware: nothing qualifies, and it is refused.
    let r = ask(Some("key-strict"), CHAT).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("forbidden_by_policy") && r.body.contains("export class 3A090.a"), "{}", r.body);
    assert!(r.body.contains("region eu is not allowed"), "{}", r.body);
    assert_eq!(us.served.load(std::sync::atomic::Ordering::Relaxed), 1, "only us-lab's request reached the H100");

    // Keys.
    assert_eq!(ask(None, CHAT).await.status, 401);
    assert_eq!(ask(Some("key-nope"), CHAT).await.status, 401);
    // Rate limit: a burst of 2 (one already spent above), then 429 with Retry-After.
    assert_eq!(ask(Some("key-us"), CHAT).await.status, 200);
    let r = ask(Some("key-us"), CHAT).await;
    assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("2")), "{r:?}");
    // The EU tenant's bucket is its own.
    assert_eq!(ask(Some("key-eu"), CHAT).await.status, 200);
    // A model that only a forbidden upstream serves is a 403; one nobody serves is a 404.
    let small = r#"{"model":"small","messages":[]}"#;
    assert_eq!(ask(Some("key-strict"), small).await.status, 403);
    assert_eq!(ask(Some("key-eu"), r#"{"model":"nope","messages":[]}"#).await.status, 404);
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_fleet_file_applies_without_a_restart() {
    let b = Behaviour { chunks: 1, gap: Duration::from_millis(1), queue_depth: 0 };
    let (us, eu) = (FakeUpstream::start("us-gpu", b).await, FakeUpstream::start("eu-cpu", b).await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, fleet_text(&us.url(), &eu.url(), "")).unwrap();
    let fleet = tessera_router::load(&path).unwrap();
    let router = tessera_router::start(fleet, "127.0.0.1:0", Some(path.clone())).await.unwrap();
    assert_eq!(post(router.addr, "/v1/chat/completions", Some("key-new"), CHAT, LIMIT).await.status, 401);

    // A broken file is not applied: the old fleet keeps serving.
    std::fs::write(&path, "[[upstream]]\nname = 3\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post(router.addr, "/v1/chat/completions", Some("key-eu"), CHAT, LIMIT).await.status, 200);

    let added = "\n[[tenant]]\nname = \"new\"\napi_keys = [\"key-new\"]\nallowed_regions = [\"us\"]\n";
    std::fs::write(&path, fleet_text(&us.url(), &eu.url(), added)).unwrap();
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = post(router.addr, "/v1/chat/completions", Some("key-new"), CHAT, LIMIT).await;
        status = r.status;
        if status == 200 {
            assert_eq!(r.upstream.as_deref(), Some("us-gpu"));
            break;
        }
    }
    assert_eq!(status, 200, "the new tenant's key works after the reload");
    router.shutdown().await.unwrap();
}
