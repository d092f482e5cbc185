use super::*;
use crate::params::GenerationParams;
use crate::{parse_chat_request, parse_completion_request};
use serde_json::{json, Value};

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[test]
fn chat_validation_errors_name_the_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"model": ""}), "model", "must not be empty"),
        (json!({"messages": []}), "messages", "at least one message"),
        (json!({"temperature": 2.5}), "temperature", "2.5 is not between 0 and 2"),
        (json!({"temperature": -0.1}), "temperature", "not between"),
        (json!({"top_p": 0.0}), "top_p", "greater than 0"),
        (json!({"top_p": 1.5}), "top_p", "at most 1"),
        (json!({"n": 0}), "n", "0 is not between 1 and 16"),
        (json!({"n": 1000}), "n", "not between 1 and 16"),
        (json!({"max_tokens": 0}), "max_tokens", "not between 1 and"),
        (json!({"max_tokens": -5}), "max_tokens", "-5"),
        (json!({"max_tokens": 1_i64 << 40}), "max_tokens", "not between"),
        (json!({"max_completion_tokens": 0}), "max_completion_tokens", "not between"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop", "at most 4"),
        (json!({"stop": ["a", ""]}), "stop[1]", "empty stop sequence"),
        (json!({"stop": ""}), "stop", "empty stop sequence"),
        (json!({"presence_penalty": 3.0}), "presence_penalty", "not between -2 and 2"),
        (json!({"frequency_penalty": -2.5}), "frequency_penalty", "not between -2 and 2"),
        (json!({"top_k": -1}), "top_k", "not between"),
        (json!({"min_p": 1.5}), "min_p", "not between"),
        (json!({"repetition_penalty": 0.0}), "repetition_penalty", "greater than 0"),
        (json!({"top_logprobs": 5}), "top_logprobs", "'logprobs' must be set to true"),
        (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs", "not between 0 and 20"),
        (json!({"logprobs": false, "top_logprobs": 2}), "top_logprobs", "must be set to true"),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias.abc", "not a token id"),
        (json!({"logit_bias": {"5": 101}}), "logit_bias.5", "between -100 and 100"),
        (json!({"logit_bias": {"5": "x"}}), "logit_bias.5", "between -100 and 100"),
        (json!({"seed": 18446744073709551616u128.to_string().parse::<f64>().unwrap()}), "seed", "expected an integer"),
        (json!({"stream_options": {"include_usage": true}}), "stream_options", "only allowed when 'stream'"),
        (json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema", "Missing required"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!"}}}),
            "response_format.json_schema.name",
            "1 to 64",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}}),
            "response_format.json_schema.schema",
            "expected a JSON schema object",
        ),
        (json!({"tool_choice": "required"}), "tool_choice", "only allowed when 'tools'"),
        (
            json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "no function named 'nope'",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "has space"}}]}),
            "tools[0].function.name",
            "1 to 64",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}),
            "tools[1].function.name",
            "used twice",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
            "tools[0].function.parameters",
            "JSON schema object",
        ),
        (json!({"tools": [{"type": "custom", "custom": {"name": "f"}}]}), "tools[0].type", "'custom'"),
        (json!({"messages": [{"role": "user"}]}), "messages[0].content", "Missing required parameter"),
        (json!({"messages": [{"role": "assistant", "content": null}]}), "messages[0].content", "Missing required"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}),
            "messages[0].content[0].type",
            "'image_url' are not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
            "Missing",
        ),
        (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id", "Missing required"),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages[0].tool_calls",
            "only assistant messages",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
            "expected a string, but got an object",
        ),
    ];
    for (extra, param, needle) in cases {
        let body = chat(extra.clone());
        let error = parse_chat_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(error.status, 400, "{extra}");
        assert_eq!(error.kind, "invalid_request_error", "{extra}");
        assert_eq!(error.param.as_deref(), Some(param), "{extra}: {}", error.message);
        assert!(error.message.contains(needle), "{extra}: {}", error.message);
        assert!(error.message.contains(param) || error.message.contains("Missing"), "{extra}: {}", error.message);
    }
}

#[test]
fn completion_validation_errors_name_the_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"logprobs": 6}), "logprobs", "not between 0 and 5"),
        (json!({"logprobs": true}), "logprobs", "expected an integer"),
        (json!({"suffix": "end"}), "suffix", "not supported"),
        (json!({"best_of": 3}), "best_of", "only best_of equal to n"),
        (json!({"max_tokens": 0}), "max_tokens", "not between"),
        (json!({"n": 17}), "n", "not between 1 and 16"),
        (json!({"prompt": vec!["x"; 33]}), "prompt", "at most 32 prompts"),
        (json!({"stream_options": {}}), "stream_options", "only allowed when 'stream'"),
        (json!({"echo": "yes"}), "echo", "expected a boolean"),
    ];
    for (extra, param, needle) in cases {
        let mut body = json!({"model": "m", "prompt": "Hello"});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let error = parse_completion_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!((error.status, error.param.as_deref()), (400, Some(param)), "{extra}: {}", error.message);
        assert!(error.message.contains(needle), "{extra}: {}", error.message);
    }
}

#[test]
fn generation_params_are_normalized() {
    let body = chat(json!({
        "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.5, "n": 3, "seed": -1,
        "stop": "END", "logprobs": true, "top_logprobs": 4, "presence_penalty": 1.0, "frequency_penalty": -1.0,
        "logit_bias": {"7": -100, "8": 2.5}, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1,
        "response_format": {"type": "json_object"}
    }));
    let params = parse_chat_request(body.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(
        params,
        GenerationParams {
            max_tokens: Some(20),
            temperature: 0.5,
            top_p: 0.5,
            top_k: 40,
            min_p: 0.05,
            repetition_penalty: 1.1,
            presence_penalty: 1.0,
            frequency_penalty: -1.0,
            seed: Some(u64::MAX),
            stop: vec!["END".into()],
            n: 3,
            logprobs: Some(4),
            logit_bias: vec![(7, -100.0), (8, 2.5)],
            constraint: Some(OutputConstraint::JsonObject),
        }
    );
    let defaults = parse_chat_request(chat(json!({})).to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(defaults, GenerationParams::default());
    let logprobs_only = chat(json!({"logprobs": true}));
    let params = parse_chat_request(logprobs_only.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(params.logprobs, Some(0));
    let big_seed = chat(json!({"seed": u64::MAX}));
    let params = parse_chat_request(big_seed.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(params.seed, Some(u64::MAX));

    let completion = json!({"model": "m", "prompt": "x", "logprobs": 0});
    let params = parse_completion_request(completion.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!((params.max_tokens, params.logprobs), (Some(16), Some(0)), "OpenAI's completion default");
}

#[test]
fn json_schema_constraint() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let body =
        chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}));
    let params = parse_chat_request(body.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(params.constraint, Some(OutputConstraint::JsonSchema(schema)));
    let body = chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}));
    let params = parse_chat_request(body.to_string().as_bytes()).unwrap().generation_params().unwrap();
    assert_eq!(params.constraint, Some(OutputConstraint::JsonSchema(json!({}))));
    let body = chat(json!({"response_format": {"type": "text"}}));
    assert_eq!(parse_chat_request(body.to_string().as_bytes()).unwrap().generation_params().unwrap().constraint, None);
}

#[test]
fn prepare_generic_tools() {
    let body = chat(json!({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
        "tools": weather_tools(),
        "parallel_tool_calls": false
    }));
    let request = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let prepared = request.prepare(ToolFormat::Generic).unwrap();
    assert_eq!(prepared.tool_format, Some(ToolFormat::Generic));
    assert_eq!(prepared.template_tools, None);
    assert_eq!(prepared.messages.len(), 2);
    let system = &prepared.messages[0].content;
    assert!(system.starts_with("Be brief.\n\nYou can call the following tools:"), "{system}");
    assert!(system.contains("get_weather"), "{system}");
    let Some(OutputConstraint::JsonSchema(schema)) = &prepared.params.constraint else { panic!() };
    assert_eq!(schema["anyOf"][0]["properties"]["tool_calls"]["maxItems"], 1);
    assert_eq!(schema["anyOf"][1]["properties"]["response"], json!({"type": "string"}));

    // With a response format, the reply branch follows it.
    let body = chat(json!({"tools": weather_tools(), "response_format": {"type": "json_object"}}));
    let prepared = parse_chat_request(body.to_string().as_bytes()).unwrap().prepare(ToolFormat::Generic).unwrap();
    let Some(OutputConstraint::JsonSchema(schema)) = &prepared.params.constraint else { panic!() };
    assert_eq!(schema["anyOf"][1]["properties"]["response"], json!({"type": "object"}));
}

#[test]
fn prepare_without_active_tools() {
    for extra in [json!({}), json!({"tools": weather_tools(), "tool_choice": "none"}), json!({"tools": []})] {
        let request = parse_chat_request(chat(extra.clone()).to_string().as_bytes()).unwrap();
        let prepared = request.prepare(ToolFormat::Generic).unwrap();
        assert_eq!(prepared.tool_format, None, "{extra}");
        assert_eq!(prepared.params.constraint, None, "{extra}");
        assert_eq!(prepared.messages.len(), 1, "{extra}: no system prompt added");
    }
}

#[test]
fn prepare_hermes_tools() {
    let body = chat(json!({"tools": weather_tools(), "tool_choice": "required"}));
    let request = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let prepared = request.prepare(ToolFormat::Hermes).unwrap();
    assert_eq!(prepared.tool_format, Some(ToolFormat::Hermes));
    assert_eq!(prepared.template_tools.as_ref().map(Vec::len), Some(1));
    assert_eq!(prepared.messages.len(), 1, "the template describes the tools");
    let Some(OutputConstraint::ToolCalls(constraint)) = &prepared.params.constraint else { panic!() };
    assert!(constraint.required && constraint.parallel);

    let body = chat(json!({"tools": weather_tools(), "response_format": {"type": "json_object"}}));
    let error = parse_chat_request(body.to_string().as_bytes()).unwrap().prepare(ToolFormat::Hermes).unwrap_err();
    assert_eq!((error.status, error.param.as_deref()), (400, Some("response_format")));
}

#[test]
fn prepare_rejects_unvalidated_requests_instead_of_panicking() {
    let request = ChatCompletionRequest { model: "m".into(), ..ChatCompletionRequest::default() };
    assert_eq!(request.prepare(ToolFormat::Generic).unwrap_err().param.as_deref(), Some("messages"));
}
