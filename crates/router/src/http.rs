//! The OpenAI-compatible front end: tenants by bearer key, rate limits, then routing and
//! forwarding with retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tessera_api::{ApiError, Health, Model as ApiModel, ModelList};

use crate::config::{FleetConfig, Policy, Tenant};
use crate::forward::{self, Attempt, Call};
use crate::metrics::Outcome;
use crate::select::{self, Refusal, RequestInfo};
use crate::Router;

pub fn app(router: Arc<Router>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(router)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], e.to_json()).into_response()
}

fn retry_after(mut response: Response, after: Duration) -> Response {
    let secs = after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn health(State(router): State<Arc<Router>>) -> Response {
    // Ready when some upstream can take requests: a load balancer in front then skips a router
    // whose whole fleet is down.
    let fleet = router.fleet();
    let now = Instant::now();
    let any = fleet.upstreams.iter().any(|u| {
        let o = router.states.get(&u.name).observe(now);
        o.healthy && o.ejected_for.is_none()
    });
    if any {
        axum::Json(Health::ok()).into_response()
    } else {
        error_response(&ApiError::unavailable("No upstream is healthy."))
    }
}

async fn metrics(State(router): State<Arc<Router>>) -> Response {
    let text = router.metrics.render(&router.fleet(), &router.states);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&ApiError::route_not_found(method.as_str(), uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&ApiError::method_not_allowed(method.as_str(), uri.path()))
}

/// The tenant a request belongs to. A fleet without tenants is open to everyone, unlimited.
fn authenticate(fleet: &FleetConfig, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    if fleet.tenants.is_empty() {
        return Ok(Tenant { name: "default".into(), api_keys: vec![], policy: Policy::default(), rate_limit: None });
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::authentication("Missing bearer API key in the Authorization header."))?;
    // Every key is compared, in constant time, so timing tells nothing about near matches.
    let mut found = None;
    for tenant in &fleet.tenants {
        for key in &tenant.api_keys {
            if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
                found = Some(tenant);
            }
        }
    }
    found.cloned().ok_or_else(|| ApiError::authentication("Incorrect API key provided."))
}

async fn models(State(router): State<Arc<Router>>, headers: HeaderMap) -> Response {
    let fleet = router.fleet();
    let tenant = match authenticate(&fleet, &headers) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    // Only the models the tenant may reach.
    let mut ids: Vec<&String> = fleet
        .upstreams
        .iter()
        .filter(|u| crate::policy::denial(&tenant.policy, u).is_none())
        .flat_map(|u| &u.models)
        .collect();
    ids.sort();
    ids.dedup();
    let list = ids
        .into_iter()
        .map(|id| ApiModel {
            id: id.clone(),
            object: "model".into(),
            created: router.started,
            owned_by: "tessera".into(),
        })
        .collect();
    axum::Json(ModelList::new(list)).into_response()
}

async fn chat_completions(State(router): State<Arc<Router>>, request: Request) -> Response {
    route(router, "/v1/chat/completions", request).await
}

async fn completions(State(router): State<Arc<Router>>, request: Request) -> Response {
    route(router, "/v1/completions", request).await
}

/// What routing needs from a request body: the model, whether it streams, and the prompt text
/// for prefix affinity. The body itself is forwarded unchanged.
pub struct Parsed {
    pub model: String,
    pub stream: bool,
    pub prompt: String,
}

pub fn parse_body(body: &[u8]) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("The request body is not valid JSON: {e}.")))?;
    let object =
        value.as_object().ok_or_else(|| ApiError::invalid_request("The request body must be a JSON object."))?;
    let model = match object.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a non-empty string.")),
        None => return Err(ApiError::invalid_param("model", "You must provide a model parameter.")),
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_param("stream", "`stream` must be a boolean.")),
    };
    let mut prompt = String::new();
    if let Some(Value::Array(messages)) = object.get("messages") {
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            prompt.push_str(role);
            prompt.push('\n');
            match m.get("content") {
                Some(Value::String(s)) => prompt.push_str(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        prompt.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                }
                _ => {}
            }
            prompt.push('\n');
        }
    }
    match object.get("prompt") {
        Some(Value::String(s)) => prompt.push_str(s),
        Some(Value::Array(items)) => prompt.push_str(items.first().and_then(Value::as_str).unwrap_or("")),
        _ => {}
    }
    Ok(Parsed { model, stream, prompt })
}

async fn route(router: Arc<Router>, path: &'static str, request: Request) -> Response {
    let arrived = Instant::now();
    let fleet = router.fleet();
    let settings = &fleet.router;
    let tenant = match authenticate(&fleet, request.headers()) {
        Ok(t) => t,
        Err(e) => {
            router.metrics.count("(unauthenticated)", Outcome::Unauthorized);
            return error_response(&e);
        }
    };
    if let Some((rate, burst)) = tenant.rate_limit {
        if let Err(wait) = router.limits.check(&tenant.name, rate, burst, arrived) {
            router.metrics.count(&tenant.name, Outcome::RateLimited);
            let e = ApiError::rate_limited(format!(
                "Rate limit of {rate} requests per second reached for tenant {}. Retry later.",
                tenant.name
            ));
            return retry_after(error_response(&e), wait);
        }
    }
    let body: Bytes = match axum::body::to_bytes(request.into_body(), settings.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return error_response(&ApiError::payload_too_large(settings.max_body_bytes as u64)),
    };
    let parsed = match parse_body(&body) {
        Ok(p) => p,
        Err(e) => {
            router.metrics.count(&tenant.name, Outcome::ClientError);
            return error_response(&e);
        }
    };
    let observed = router.observe(&fleet);
    let info = RequestInfo {
        model: &parsed.model,
        affinity: select::affinity_key(&parsed.model, &parsed.prompt, settings.affinity_prefix_chars),
    };
    let decision = select::rank(&fleet.upstreams, &observed, &tenant.policy, &info, settings);
    if let Some(refusal) = decision.refusal(&fleet.upstreams, &parsed.model) {
        let (outcome, error) = refusal_error(&refusal, &parsed.model, &tenant.name);
        router.metrics.count(&tenant.name, outcome);
        let response = error_response(&error);
        return if outcome == Outcome::Unavailable { retry_after(response, Duration::from_secs(1)) } else { response };
    }

    let deadline = arrived + settings.request_timeout;
    let mut failures: Vec<String> = Vec::new();
    for choice in decision.order.iter().take(settings.retries as usize + 1) {
        let upstream = &fleet.upstreams[choice.upstream];
        let state = router.states.get(&upstream.name);
        let call = Call {
            upstream,
            state: state.clone(),
            path,
            body: body.clone(),
            stream: parsed.stream,
            first_byte_timeout: settings.first_byte_timeout,
            deadline,
            arrived,
        };
        let metrics = router.metrics.clone();
        let tenant_name = tenant.name.clone();
        let on_first_byte: forward::OnFirstByte = Box::new(move |ttft| metrics.observe_ttft(&tenant_name, ttft));
        match forward::attempt(&router.client, call, on_first_byte).await {
            Attempt::Answered { response, ok } => {
                if ok && !parsed.stream {
                    state.record_success(None);
                }
                router.metrics.count(&tenant.name, if ok { Outcome::Ok } else { Outcome::ClientError });
                return response;
            }
            Attempt::Failed { why, counts } => {
                tracing::warn!("{path} on upstream {}: {why}", upstream.name);
                state.retried_away.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if counts {
                    state.record_failure(settings, Instant::now());
                }
                failures.push(format!("{}: {why}", upstream.name));
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    router.metrics.count(&tenant.name, Outcome::UpstreamFailed);
    let error = ApiError {
        status: 502,
        kind: "server_error",
        message: format!("Every upstream tried failed before answering: {}.", failures.join("; ")),
        param: None,
        code: Some("upstream_failed"),
    };
    error_response(&error)
}

fn refusal_error(refusal: &Refusal, model: &str, tenant: &str) -> (Outcome, ApiError) {
    match refusal {
        Refusal::UnknownModel => (Outcome::ClientError, ApiError::model_not_found(model)),
        Refusal::Forbidden(reasons) => (
            Outcome::Forbidden,
            ApiError {
                status: 403,
                kind: "permission_error",
                message: format!("Tenant {tenant} may not use any upstream serving {model}: {}.", reasons.join("; ")),
                param: Some("model".into()),
                code: Some("forbidden_by_policy"),
            },
        ),
        Refusal::Unavailable(reasons) => (
            Outcome::Unavailable,
            ApiError::unavailable(format!(
                "No permitted upstream can take a request for {model} now: {}.",
                reasons.join("; ")
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_give_model_stream_and_prompt() {
        let chat = br#"{"model":"m","stream":true,"messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#;
        let p = parse_body(chat).unwrap();
        assert_eq!((p.model.as_str(), p.stream, p.prompt.as_str()), ("m", true, "system\nBe brief.\nuser\nHi\n"));
        let p = parse_body(br#"{"model":"m","prompt":["Once upon", "x"]}"#).unwrap();
        assert_eq!((p.stream, p.prompt.as_str()), (false, "Once upon"));
        for (body, needle) in [
            (&b"{"[..], "not valid JSON"),
            (b"[]", "must be a JSON object"),
            (b"{}", "provide a model"),
            (br#"{"model":3}"#, "non-empty string"),
            (br#"{"model":"m","stream":"yes"}"#, "`stream` must be a boolean"),
        ] {
            let e = parse_body(body).err().unwrap();
            assert!(e.message.contains(needle), "{e:?}");
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn refusals_map_to_403_404_and_503() {
        let (o, e) = refusal_error(&Refusal::Forbidden(vec!["gpu: policy: region us".into()]), "m", "acme");
        assert_eq!((o, e.status, e.code), (Outcome::Forbidden, 403, Some("forbidden_by_policy")));
        assert!(e.message.contains("Tenant acme") && e.message.contains("region us"));
        assert_eq!(refusal_error(&Refusal::UnknownModel, "m", "t").1.status, 404);
        assert_eq!(refusal_error(&Refusal::Unavailable(vec![]), "m", "t").1.status, 503);
        let r = retry_after(error_response(&ApiError::unavailable("x")), Duration::from_millis(200));
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
