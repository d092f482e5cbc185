//! The HTTP front end: OpenAI routes, bearer-key auth, body limits, the bounded queue's 429s,
//! timeouts, server-sent events. Knows no tensors: it renders prompts, submits
//! [`GenerationRequest`]s to the engine and turns the events that come back into responses.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use subtle::ConstantTimeEq;
use tessera_api::{
    parse_chat_request, parse_completion_request, parse_tool_output, sse_event, ApiError, AssistantMessage, ChatChoice,
    ChatDelta, ChatLogprobs, CompletionChoice, CompletionLogprobs, FinishReason as ApiFinish, GenerationParams, Health,
    IdGenerator, Model as ApiModel, ModelList, PromptInput, ResponseMeta, ToolCallParser, ToolFormat, TopLogprob,
    TopLogprobs, Usage as ApiUsage, SSE_DONE,
};
use tessera_runtime::{LoadedModel, SamplerOptions};
use tessera_tokenizer::ChatTemplate;
use tokio::sync::mpsc;

use crate::constraint;
use crate::engine::{ChosenLogprob, EngineHandle, Event, FinishReason, GenerationRequest, SubmitError, Usage};
use crate::metrics::Metrics;

/// Limits and identity of one server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The model id clients name (`/v1/models` lists it).
    pub model_name: String,
    /// Bearer keys; empty: no authentication.
    pub api_keys: Vec<String>,
    pub max_body_bytes: usize,
    /// Prompt plus completion tokens of one choice, at most.
    pub max_context: usize,
    /// Whole-request limit; a stream that runs past it ends with an error event.
    pub request_timeout: Duration,
}

pub struct AppState {
    pub engine: EngineHandle,
    pub model: Arc<LoadedModel>,
    pub template: ChatTemplate,
    pub tool_format: ToolFormat,
    pub vocabulary: Arc<tessera_constrain::Vocabulary>,
    pub config: HttpConfig,
    pub metrics: Arc<Metrics>,
    pub ids: Mutex<IdGenerator>,
    pub started: u64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An [`ApiError`] as an HTTP response.
pub struct ErrorResponse(pub ApiError);

impl From<ApiError> for ErrorResponse {
    fn from(e: ApiError) -> Self {
        ErrorResponse(e)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], self.0.to_json()).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type Result<T> = std::result::Result<T, ErrorResponse>;

async fn health() -> Response {
    json_response(&Health::ok())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response> {
    authorize(&state, &headers)?;
    let model = ApiModel {
        id: state.config.model_name.clone(),
        object: "model".into(),
        created: state.started,
        owned_by: "tessera".into(),
    };
    Ok(json_response(&ModelList::new(vec![model])))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ErrorResponse {
    ErrorResponse(ApiError::route_not_found(method.as_str(), uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ErrorResponse {
    ErrorResponse(ApiError::method_not_allowed(method.as_str(), uri.path()))
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ErrorResponse(ApiError::internal(format!("serializing the response: {e}"))).into_response(),
    }
}

/// Checks the bearer key in constant time (against every key, so timing says nothing about
/// which key nearly matched).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<()> {
    if state.config.api_keys.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::authentication("Missing bearer API key in the Authorization header."))?;
    let mut ok = subtle::Choice::from(0u8);
    for key in &state.config.api_keys {
        ok |= given.as_bytes().ct_eq(key.as_bytes());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(ApiError::authentication("Incorrect API key provided.").into())
    }
}

async fn read_body(state: &AppState, request: Request) -> Result<Bytes> {
    let limit = state.config.max_body_bytes;
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ErrorResponse(ApiError::payload_too_large(limit as u64)))
}

fn check_model(state: &AppState, model: &str) -> Result<()> {
    if model == state.config.model_name {
        Ok(())
    } else {
        Err(ApiError::model_not_found(model).into())
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One choice submitted to the engine.
struct Submitted {
    index: u32,
    events: mpsc::UnboundedReceiver<Event>,
    prompt_text: Option<String>,
}

/// Sends `n` choices of `prompt` to the engine.
fn submit(
    state: &AppState,
    prompt: &[u32],
    params: &GenerationParams,
    first_index: u32,
    prompt_text: Option<String>,
) -> Result<Vec<Submitted>> {
    let vocab = state.model.config().vocab_size;
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "The prompt is empty.").into());
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(
            ApiError::invalid_param("prompt", format!("Token id {bad} is outside the vocabulary of {vocab}.")).into()
        );
    }
    if let Some((bad, _)) = params.logit_bias.iter().find(|(t, _)| *t as usize >= vocab) {
        return Err(ApiError::invalid_param(
            "logit_bias",
            format!("Token id {bad} is outside the vocabulary of {vocab}."),
        )
        .into());
    }
    let context = state.config.max_context;
    let room = context.saturating_sub(prompt.len());
    let max_tokens = match params.max_tokens {
        Some(m) if m as usize > room || room == 0 => {
            return Err(
                ApiError::context_length_exceeded("max_tokens", context as u64, prompt.len() as u64, m as u64).into()
            );
        }
        Some(m) => m as usize,
        None if room == 0 => {
            return Err(ApiError::context_length_exceeded("messages", context as u64, prompt.len() as u64, 1).into());
        }
        None => room,
    };
    let base_seed = params.seed.unwrap_or_else(|| state.ids.lock().unwrap_or_else(|p| p.into_inner()).next_u64());
    let mut out = Vec::with_capacity(params.n as usize);
    for i in 0..params.n {
        let filter = match &params.constraint {
            Some(c) => Some(constraint::filter_for(&state.vocabulary, c, &params.logit_bias)?),
            None if !params.logit_bias.is_empty() => Some(constraint::bias_only(&params.logit_bias)),
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let sampling = SamplerOptions {
            temperature: params.temperature,
            top_k: params.top_k as usize,
            top_p: params.top_p,
            min_p: params.min_p,
            repeat_penalty: params.repetition_penalty,
            repeat_last_n: 64,
            frequency_penalty: params.frequency_penalty,
            presence_penalty: params.presence_penalty,
            seed: base_seed.wrapping_add(i as u64),
        };
        let request = GenerationRequest {
            prompt: prompt.to_vec(),
            max_tokens,
            sampling,
            logprobs: params.logprobs.map(|k| k as usize),
            stop: params.stop.clone(),
            filter,
            events: tx,
            arrived: Instant::now(),
        };
        state.engine.submit(request).map_err(|e| match e {
            SubmitError::QueueFull(_) => {
                state.metrics.requests_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ErrorResponse(ApiError::queue_full())
            }
            SubmitError::ShuttingDown => ErrorResponse(ApiError::unavailable("The server is shutting down.")),
        })?;
        out.push(Submitted { index: first_index + i, events: rx, prompt_text: prompt_text.clone() });
    }
    state
        .metrics
        .prompt_tokens
        .fetch_add((prompt.len() * params.n as usize) as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// Everything one choice produced.
#[derive(Default)]
struct Collected {
    text: String,
    logprobs: Vec<ChosenLogprob>,
    finish: Option<FinishReason>,
    usage: Usage,
}

/// Waits for a choice to finish (or the deadline).
async fn collect(mut s: Submitted, deadline: tokio::time::Instant) -> Result<Collected> {
    let mut c = Collected::default();
    loop {
        match tokio::time::timeout_at(deadline, s.events.recv()).await {
            Err(_) => return Err(ApiError::unavailable("The request timed out.").into()),
            Ok(None) => return Err(ApiError::internal("The engine stopped before the request finished.").into()),
            Ok(Some(Event::Token { text, logprob })) => {
                c.text.push_str(&text);
                c.logprobs.extend(logprob);
            }
            Ok(Some(Event::Done { reason, usage })) => {
                c.finish = Some(reason);
                c.usage = usage;
                return Ok(c);
            }
            Ok(Some(Event::Error { message })) => return Err(engine_error(message).into()),
        }
    }
}

fn engine_error(message: String) -> ApiError {
    // Requests that can never fit are the client's problem; anything else is ours.
    if message.contains("cannot fit") || message.contains("too long") || message.contains("KV cache") {
        ApiError::invalid_request(message)
    } else {
        ApiError::internal(message)
    }
}

fn api_finish(reason: FinishReason) -> ApiFinish {
    match reason {
        FinishReason::Stop => ApiFinish::Stop,
        FinishReason::Length => ApiFinish::Length,
    }
}

fn api_usage(prompt: usize, completion: usize, cached: usize) -> ApiUsage {
    ApiUsage::new(prompt as u32, completion as u32, cached as u32)
}

fn chat_logprobs(items: &[ChosenLogprob]) -> ChatLogprobs {
    let token = |l: &crate::engine::TokenLogprob| TopLogprob {
        token: l.token.clone(),
        logprob: tessera_api::clamp_logprob(l.logprob),
        bytes: Some(l.bytes.clone()),
    };
    ChatLogprobs {
        content: Some(
            items
                .iter()
                .map(|c| tessera_api::TokenLogprob {
                    token: c.chosen.token.clone(),
                    logprob: tessera_api::clamp_logprob(c.chosen.logprob),
                    bytes: Some(c.chosen.bytes.clone()),
                    top_logprobs: c.top.iter().map(token).collect(),
                })
                .collect(),
        ),
        refusal: None,
    }
}

fn completion_logprobs(items: &[ChosenLogprob], text_start: usize) -> CompletionLogprobs {
    let mut offset = text_start;
    let mut out = CompletionLogprobs::default();
    for c in items {
        out.tokens.push(c.chosen.token.clone());
        out.token_logprobs.push(Some(tessera_api::clamp_logprob(c.chosen.logprob)));
        out.top_logprobs.push(Some(TopLogprobs(
            c.top.iter().map(|t| (t.token.clone(), tessera_api::clamp_logprob(t.logprob))).collect(),
        )));
        out.text_offset.push(offset as u32);
        offset += c.chosen.token.len();
    }
    out
}

async fn chat_completions(State(state): State<Arc<AppState>>, request: Request) -> Result<Response> {
    authorize(&state, request.headers())?;
    state.metrics.requests_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = read_body(&state, request).await?;
    let req = parse_chat_request(&body)?;
    check_model(&state, &req.model)?;
    let prepared = req.prepare(state.tool_format)?;
    let rendered = state
        .template
        .render_with_tools(&prepared.messages, prepared.template_tools.as_deref(), true)
        .map_err(|e| ApiError::invalid_request(format!("The chat template failed on these messages: {e}")))?;
    let tokenizer = &state.model.tokenizer;
    // Templates that write the BOS text themselves must not get a second BOS.
    let bos_in_text = tokenizer.bos_id().is_some_and(|b| rendered.starts_with(&tokenizer.decode(&[b])));
    let prompt = tokenizer.encode(&rendered, tokenizer.add_bos_by_default() && !bos_in_text, true);
    let choices = submit(&state, &prompt, &prepared.params, 0, None)?;
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let (id, created) = {
        let mut ids = state.ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.next_id("chatcmpl-"), unix_now())
    };
    let meta = ResponseMeta::new(id, created, state.config.model_name.clone());
    let want_logprobs = prepared.params.logprobs.is_some();
    let tool_format = prepared.tool_format;
    let tool_ids = state.ids.lock().unwrap_or_else(|p| p.into_inner()).fork();

    if !req.is_stream() {
        let mut out = Vec::new();
        let (mut completion, mut cached) = (0, 0);
        for c in futures_util::future::join_all(choices.into_iter().map(|s| {
            let index = s.index;
            async move { (index, collect(s, deadline).await) }
        }))
        .await
        {
            let (index, collected) = c;
            let collected = collected?;
            completion += collected.usage.completion_tokens;
            cached = collected.usage.cached_tokens;
            let finish = api_finish(collected.finish.unwrap_or(FinishReason::Stop));
            let (message, finish) = match tool_format {
                Some(format) => {
                    let parsed = parse_tool_output(&collected.text, format, tool_ids.clone());
                    let calls = !parsed.tool_calls.is_empty();
                    (AssistantMessage::from(parsed), if calls { ApiFinish::ToolCalls } else { finish })
                }
                None => (AssistantMessage::new(Some(collected.text), Vec::new()), finish),
            };
            let logprobs = want_logprobs.then(|| chat_logprobs(&collected.logprobs));
            out.push(ChatChoice { index, message, logprobs, finish_reason: finish });
        }
        let usage = api_usage(prompt.len(), completion, cached);
        return Ok(json_response(&meta.chat_completion(out, usage)));
    }

    let include_usage = req.include_usage();
    let prompt_len = prompt.len();
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let n = choices.len();
        for s in &choices {
            if tx.send(sse_event(&meta.chat_role_chunk(s.index))).await.is_err() {
                return;
            }
        }
        let mut parsers: Vec<Option<ToolCallParser>> =
            (0..n).map(|_| tool_format.map(|f| ToolCallParser::new(f, tool_ids.clone()))).collect();
        let mut merged = MergedEvents::new(choices);
        let (mut completion, mut cached, mut open) = (0, 0, n);
        while open > 0 {
            let Ok(next) = merged.next(deadline, &tx).await else { return };
            let Some((k, index, event)) = next else { break };
            let chunk = match event {
                Event::Token { text, logprob } => {
                    let delta = match parsers[k].as_mut() {
                        Some(p) => p.push(&text),
                        None => ChatDelta::content(text),
                    };
                    let logprobs = logprob.filter(|_| want_logprobs).map(|l| chat_logprobs(&[l]));
                    if delta.is_empty() && logprobs.is_none() {
                        continue;
                    }
                    sse_event(&meta.chat_delta_chunk(index, delta, logprobs))
                }
                Event::Done { reason, usage } => {
                    open -= 1;
                    completion += usage.completion_tokens;
                    cached = usage.cached_tokens;
                    let mut finish = api_finish(reason);
                    let mut text = String::new();
                    if let Some(p) = parsers[k].as_mut() {
                        let delta = p.finish();
                        if !p.result().tool_calls.is_empty() {
                            finish = ApiFinish::ToolCalls;
                        }
                        if !delta.is_empty() {
                            text.push_str(&sse_event(&meta.chat_delta_chunk(index, delta, None)));
                        }
                    }
                    text.push_str(&sse_event(&meta.chat_finish_chunk(index, finish)));
                    text
                }
                Event::Error { message } => {
                    let _ = tx.send(engine_error(message).to_sse()).await;
                    return;
                }
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if include_usage {
            let _ = tx.send(sse_event(&meta.chat_usage_chunk(api_usage(prompt_len, completion, cached)))).await;
        }
        let _ = tx.send(SSE_DONE.to_string()).await;
    });
    Ok(sse_response(rx))
}

async fn completions(State(state): State<Arc<AppState>>, request: Request) -> Result<Response> {
    authorize(&state, request.headers())?;
    state.metrics.requests_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = read_body(&state, request).await?;
    let req = parse_completion_request(&body)?;
    check_model(&state, &req.model)?;
    let params = req.generation_params()?;
    let tokenizer = &state.model.tokenizer;
    let echo = req.echo();
    let mut choices = Vec::new();
    let mut prompt_tokens = 0;
    for (p, input) in req.prompt.inputs().into_iter().enumerate() {
        let (tokens, text) = match input {
            PromptInput::Text(text) => (tokenizer.encode(&text, tokenizer.add_bos_by_default(), false), text),
            PromptInput::Tokens(tokens) => {
                let text = tokenizer.decode(&tokens);
                (tokens, text)
            }
        };
        prompt_tokens += tokens.len();
        let first = p as u32 * params.n;
        choices.extend(submit(&state, &tokens, &params, first, echo.then_some(text))?);
    }
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let (id, created) = {
        let mut ids = state.ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.next_id("cmpl-"), unix_now())
    };
    let meta = ResponseMeta::new(id, created, state.config.model_name.clone());
    let want_logprobs = params.logprobs.is_some();

    if !req.is_stream() {
        let (mut completion, mut cached) = (0, 0);
        let mut out = Vec::new();
        for (index, prompt_text, collected) in futures_util::future::join_all(choices.into_iter().map(|s| {
            let (index, prompt_text) = (s.index, s.prompt_text.clone());
            async move { (index, prompt_text, collect(s, deadline).await) }
        }))
        .await
        {
            let collected = collected?;
            completion += collected.usage.completion_tokens;
            cached += collected.usage.cached_tokens;
            let prefix = prompt_text.unwrap_or_default();
            let logprobs = want_logprobs.then(|| completion_logprobs(&collected.logprobs, prefix.len()));
            out.push(CompletionChoice {
                text: prefix + &collected.text,
                index,
                logprobs,
                finish_reason: Some(api_finish(collected.finish.unwrap_or(FinishReason::Stop))),
            });
        }
        let usage = api_usage(prompt_tokens, completion, cached);
        return Ok(json_response(&meta.completion(out, Some(usage))));
    }

    let include_usage = req.include_usage();
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let n = choices.len();
        for s in &choices {
            if let Some(text) = &s.prompt_text {
                if tx.send(sse_event(&meta.completion_chunk(s.index, text.clone(), None, None))).await.is_err() {
                    return;
                }
            }
        }
        let mut offsets: Vec<usize> = choices.iter().map(|s| s.prompt_text.as_ref().map_or(0, String::len)).collect();
        let mut merged = MergedEvents::new(choices);
        let (mut completion, mut cached, mut open) = (0, 0, n);
        while open > 0 {
            let Ok(next) = merged.next(deadline, &tx).await else { return };
            let Some((k, index, event)) = next else { break };
            let chunk = match event {
                Event::Token { text, logprob } => {
                    let logprobs = logprob.filter(|_| want_logprobs).map(|l| completion_logprobs(&[l], offsets[k]));
                    offsets[k] += text.len();
                    if text.is_empty() && logprobs.is_none() {
                        continue;
                    }
                    sse_event(&meta.completion_chunk(index, text, logprobs, None))
                }
                Event::Done { reason, usage } => {
                    open -= 1;
                    completion += usage.completion_tokens;
                    cached += usage.cached_tokens;
                    sse_event(&meta.completion_chunk(index, String::new(), None, Some(api_finish(reason))))
                }
                Event::Error { message } => {
                    let _ = tx.send(engine_error(message).to_sse()).await;
                    return;
                }
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if include_usage {
            let _ =
                tx.send(sse_event(&meta.completion_usage_chunk(api_usage(prompt_tokens, completion, cached)))).await;
        }
        let _ = tx.send(SSE_DONE.to_string()).await;
    });
    Ok(sse_response(rx))
}

/// The events of every choice of a request as one stream, in arrival order, each tagged with the
/// choice's position in the request and its `index`.
struct MergedEvents(futures_util::stream::SelectAll<futures_util::stream::BoxStream<'static, (usize, u32, Event)>>);

/// The request's deadline passed; the client has been sent an error event.
struct TimedOut;

impl MergedEvents {
    fn new(choices: Vec<Submitted>) -> MergedEvents {
        MergedEvents(futures_util::stream::select_all(choices.into_iter().enumerate().map(|(k, s)| {
            let index = s.index;
            tokio_stream_from(s.events).map(move |e| (k, index, e)).boxed()
        })))
    }

    /// The next event; `Ok(None)` once every choice's channel has closed.
    async fn next(
        &mut self,
        deadline: tokio::time::Instant,
        tx: &mpsc::Sender<String>,
    ) -> std::result::Result<Option<(usize, u32, Event)>, TimedOut> {
        match tokio::time::timeout_at(deadline, self.0.next()).await {
            Ok(next) => Ok(next),
            Err(_) => {
                let _ = tx.send(ApiError::unavailable("The request timed out.").to_sse()).await;
                Err(TimedOut)
            }
        }
    }
}

/// A receiver as a stream; dropping the stream drops the receiver, which the engine notices.
fn tokio_stream_from<T: Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

fn sse_response(rx: mpsc::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|text| (Ok::<Bytes, Infallible>(Bytes::from(text)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ErrorResponse(ApiError::internal("building the stream")).into_response())
}
