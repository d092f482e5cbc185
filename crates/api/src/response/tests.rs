use super::*;
use serde_json::{json, Value};

/// Deserializes `sample` into `T`, serializes it back and expects the same JSON.
fn round_trip<T: serde::de::DeserializeOwned + Serialize>(sample: Value) -> T {
    let parsed: T = serde_json::from_value(sample.clone()).unwrap();
    // Through text, as a server sends it (an f32 logprob prints as its shortest form).
    let text = serde_json::to_string(&parsed).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), sample);
    parsed
}

#[test]
fn chat_completion_round_trips() {
    let completion: ChatCompletion = round_trip(json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 0}},
        "system_fingerprint": "fp_44709d6fcb"
    }));
    assert_eq!(completion.choices[0].finish_reason, FinishReason::Stop);

    // What OpenAI sends today carries more fields; they are ignored.
    let full = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null, "annotations": []},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}
    });
    let parsed: ChatCompletion = serde_json::from_value(full).unwrap();
    assert_eq!(parsed.choices[0].message.content.as_deref(), Some("Hi"));
}

#[test]
fn tool_call_response_round_trips() {
    let completion: ChatCompletion = round_trip(json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1699896916,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}
                }]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
    }));
    assert_eq!(completion.choices[0].message.tool_calls[0].function.name, "get_current_weather");
}

#[test]
fn chat_logprobs_round_trip() {
    round_trip::<ChatCompletion>(json!({
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1702685778, "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": null},
            "logprobs": {
                "content": [{
                    "token": "Hello", "logprob": -0.31725305, "bytes": [72, 101, 108, 108, 111],
                    "top_logprobs": [
                        {"token": "Hello", "logprob": -0.31725305, "bytes": [72, 101, 108, 108, 111]},
                        {"token": "Hi", "logprob": -1.3190403, "bytes": [72, 105]}
                    ]
                }],
                "refusal": null
            },
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
    }));
}

#[test]
fn stream_chunks_round_trip() {
    let samples = [
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "system_fingerprint": "fp_44709d6fcb",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                            "finish_reason": null}]}),
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": null, "finish_reason": null}]}),
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                   "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
                   "logprobs": null, "finish_reason": null}]}),
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]},
                            "logprobs": null, "finish_reason": null}]}),
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]}),
        json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
               "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
    ];
    for sample in samples {
        round_trip::<ChatCompletionChunk>(sample);
    }
}

#[test]
fn completion_round_trips() {
    round_trip::<Completion>(json!({
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": 1589478378,
        "model": "gpt-3.5-turbo-instruct",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    }));
    let with_logprobs: Completion = round_trip(json!({
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{
            "text": " Paris.", "index": 0, "finish_reason": "stop",
            "logprobs": {
                "tokens": [" Paris", "."],
                "token_logprobs": [-0.5, -0.25],
                "top_logprobs": [{" Paris": -0.5, " Lyon": -2.5}, {".": -0.25, "!": -3.0}],
                "text_offset": [20, 26]
            }
        }],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    }));
    // Alternatives keep their order (most likely first), whatever their keys.
    let top = with_logprobs.choices[0].logprobs.as_ref().unwrap().top_logprobs[1].as_ref().unwrap();
    assert_eq!(top.0, vec![(".".to_string(), -0.25), ("!".to_string(), -3.0)]);
    let text = serde_json::to_string(&TopLogprobs(vec![("z".into(), -0.5), ("a".into(), -1.0)])).unwrap();
    assert_eq!(text, r#"{"z":-0.5,"a":-1.0}"#);
    // A stream chunk: finish_reason null until the last.
    round_trip::<CompletionChunk>(json!({
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"text": " Par", "index": 0, "logprobs": null, "finish_reason": null}]
    }));
}

#[test]
fn model_list_and_health() {
    let list: ModelList = round_trip(json!({
        "object": "list",
        "data": [{"id": "smollm2", "object": "model", "created": 1686935002, "owned_by": "tessera"}]
    }));
    assert_eq!(list, ModelList::new(vec![Model::new("smollm2", 1686935002, "tessera")]));
    assert_eq!(serde_json::to_value(Health::ok()).unwrap(), json!({"status": "ok"}));
    assert_eq!(serde_json::to_value(Health::loading()).unwrap(), json!({"status": "loading"}));
}

#[test]
fn builders_make_openai_chunks() {
    let meta = ResponseMeta::new("chatcmpl-x", 7, "smollm2");
    let role = serde_json::to_value(meta.chat_role_chunk(0)).unwrap();
    assert_eq!(
        role,
        json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 7, "model": "smollm2",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                            "finish_reason": null}]})
    );
    let content = serde_json::to_value(meta.chat_delta_chunk(1, ChatDelta::content("Hi"), None)).unwrap();
    assert_eq!(content["choices"][0]["delta"], json!({"content": "Hi"}));
    assert_eq!(content["choices"][0]["index"], 1);
    let finish = serde_json::to_value(meta.chat_finish_chunk(0, FinishReason::ToolCalls)).unwrap();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = serde_json::to_value(meta.chat_usage_chunk(Usage::new(3, 4, 2))).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}})
    );
    assert!(role.get("usage").is_none(), "usage only on the usage chunk");

    let message = AssistantMessage::new(None, vec![ToolCall::function("call_1", "f", "{}")]);
    let chat = meta.chat_completion(
        vec![ChatChoice { index: 0, message, logprobs: None, finish_reason: FinishReason::ToolCalls }],
        Usage::new(1, 2, 0),
    );
    let value = serde_json::to_value(&chat).unwrap();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(value["choices"][0]["message"]["tool_calls"][0]["type"], "function");

    let meta = ResponseMeta::new("cmpl-x", 7, "smollm2");
    let chunk = serde_json::to_value(meta.completion_chunk(2, "abc", None, None)).unwrap();
    assert_eq!(chunk["object"], "text_completion");
    assert_eq!(chunk["choices"][0], json!({"text": "abc", "index": 2, "logprobs": null, "finish_reason": null}));
    let usage = serde_json::to_value(meta.completion_usage_chunk(Usage::new(1, 1, 0))).unwrap();
    assert_eq!(usage["choices"], json!([]));
}

#[test]
fn sse_framing() {
    assert_eq!(sse_event(&json!({"a": 1})), "data: {\"a\":1}\n\n");
    assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    let error = crate::ApiError::internal("boom").to_sse();
    assert!(error.starts_with("data: {\"error\":") && error.ends_with("\n\n"), "{error}");
}

#[test]
fn delta_emptiness() {
    assert!(ChatDelta::default().is_empty());
    assert!(ChatDelta::content("").is_empty());
    assert!(!ChatDelta::content("x").is_empty());
    assert!(!ChatDelta { role: Some(Role::Assistant), ..ChatDelta::default() }.is_empty());
}

#[test]
fn ids_are_deterministic_and_shaped_like_openai() {
    let mut a = IdGenerator::new(42);
    let mut b = IdGenerator::new(42);
    let id = a.next_id("chatcmpl-");
    assert_eq!(id, b.next_id("chatcmpl-"));
    assert_eq!(id.len(), "chatcmpl-".len() + 24);
    assert!(id["chatcmpl-".len()..].bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a.next_id("call_"), a.next_id("call_"));
    let mut forked = a.fork();
    assert_ne!(forked.next_id("call_"), a.next_id("call_"));
}

#[test]
fn logprobs_are_finite() {
    assert_eq!(clamp_logprob(f32::NEG_INFINITY), MIN_LOGPROB);
    assert_eq!(clamp_logprob(f32::NAN), MIN_LOGPROB);
    assert_eq!(clamp_logprob(-1e30), MIN_LOGPROB);
    assert_eq!(clamp_logprob(-0.5), -0.5);
    assert_eq!(clamp_logprob(1e-7), 0.0);
}
