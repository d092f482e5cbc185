//! Request bodies from bytes: JSON syntax errors and type errors become 400s that name the
//! field (`Invalid type for 'messages[0].content': ...`), then validation checks ranges.

use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::request::{ChatCompletionRequest, CompletionRequest};

/// Parses and validates the body of `POST /v1/chat/completions`. Never panics; every failure
/// is a 400 naming the field where there is one.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatCompletionRequest, ApiError> {
    let request: ChatCompletionRequest = parse_json(body)?;
    request.validate()?;
    Ok(request)
}

/// Parses and validates the body of `POST /v1/completions`, as [`parse_chat_request`] does.
pub fn parse_completion_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let request: CompletionRequest = parse_json(body)?;
    request.validate()?;
    Ok(request)
}

/// Deserializes a JSON object `body` into `T`, mapping errors to 400s with the path of the
/// field at fault.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array too (fields by position); a body must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(error) => request_error(&error, "."),
            Ok(_) => ApiError::invalid_request("The request body must be a JSON object."),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        // A field error may come before a syntax error later in the body: report the syntax.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            if !syntax.is_data() {
                return request_error(&syntax, ".");
            }
        }
        let path = error.path().to_string();
        request_error(error.inner(), &path)
    })?;
    deserializer.end().map_err(|error| request_error(&error, "."))?;
    Ok(value)
}

fn request_error(error: &serde_json::Error, path: &str) -> ApiError {
    // serde_path_to_error writes the root as "."; OpenAI writes no param for it.
    let param = (path != ".").then(|| path.to_string());
    let text = error.to_string();
    let message = strip_position(&text);
    if !error.is_data() {
        let message = format!(
            "We could not parse the JSON body of your request: {message} (line {}, column {}). \
             The API expects a JSON object.",
            error.line(),
            error.column()
        );
        return ApiError { param, ..ApiError::invalid_request(message) };
    }
    let Some(param) = param else {
        // The body parsed as JSON but is not an object (or lacks a top-level field).
        if let Some(field) = missing_field(message) {
            return ApiError::invalid_param(field, format!("Missing required parameter: '{field}'."));
        }
        return ApiError::invalid_request(format!("The request body must be a JSON object: {}.", rewrite(message)));
    };
    if let Some(field) = missing_field(message) {
        let full = format!("{param}.{field}");
        return ApiError::invalid_param(full.clone(), format!("Missing required parameter: '{full}'."));
    }
    if let Some(number) = message.strip_prefix("invalid value: integer `").and_then(|m| m.split_once('`')) {
        let message = format!("Invalid value for '{param}': {} is out of range.", number.0);
        return ApiError::invalid_param(param, message);
    }
    if let Some((expected, got)) = invalid_type(message) {
        return ApiError::invalid_param(
            param.clone(),
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        );
    }
    ApiError::invalid_param(param.clone(), format!("Invalid value for '{param}': {}.", rewrite(message)))
}

/// serde_json appends " at line L column C" to every message.
fn strip_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(at) if text[at..].contains(" column ") => &text[..at],
        _ => text,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Splits serde's "invalid type: GOT, expected EXPECTED" into plain words.
fn invalid_type(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (got, expected) = rest.rsplit_once(", expected ")?;
    Some((describe_expected(expected), describe_got(got)))
}

fn describe_expected(expected: &str) -> String {
    let plain = match expected {
        "f64" | "f32" => "a number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "an integer",
        "a sequence" => "an array",
        "a map" => "an object",
        "a boolean" | "a string" => expected,
        _ if expected.starts_with("struct ") => "an object",
        _ if expected.starts_with("enum ") => "a string",
        _ => return rewrite(expected),
    };
    plain.to_string()
}

fn describe_got(got: &str) -> String {
    let (kind, value) = match got.split_once(' ') {
        Some((kind, value)) => (kind, Some(value)),
        None => (got, None),
    };
    let kind = match kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "an object",
        "null" | "unit" => return "null".to_string(),
        _ => return rewrite(got),
    };
    match value {
        // "floating point `1.5`": drop the second word of the kind.
        Some(value) => {
            let value = value.strip_prefix("point ").unwrap_or(value);
            let value = value.strip_prefix('`').and_then(|v| v.strip_suffix('`')).unwrap_or(value);
            format!("{kind} ({})", truncate(value, 40))
        }
        None => kind.to_string(),
    }
}

/// Backticks become quotes, as in OpenAI's messages.
fn rewrite(text: &str) -> String {
    text.replace('`', "'")
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn chat_error(body: Value) -> ApiError {
        parse_chat_request(body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn invalid_json_is_a_400_without_panic() {
        for body in [&b""[..], b"{", b"{\"model\": }", b"nul", b"{} trailing", b"\xff\xfe"] {
            let error = parse_chat_request(body).unwrap_err();
            assert_eq!((error.status, error.kind), (400, "invalid_request_error"), "{body:?}");
            assert!(error.message.starts_with("We could not parse the JSON body"), "{}", error.message);
        }
    }

    #[test]
    fn non_object_bodies() {
        for body in [json!([]), json!([1, 2]), json!(3), json!("x"), json!(null)] {
            let error = chat_error(body.clone());
            assert_eq!(error.status, 400);
            assert!(error.message.contains("must be a JSON object"), "{body}: {}", error.message);
        }
    }

    #[test]
    fn missing_fields_name_their_path() {
        let error = chat_error(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(error.param.as_deref(), Some("model"));
        assert_eq!(error.message, "Missing required parameter: 'model'.");

        let error = chat_error(json!({"model": "m", "messages": [{"content": "hi"}]}));
        assert_eq!(error.param.as_deref(), Some("messages[0].role"));
        assert_eq!(error.message, "Missing required parameter: 'messages[0].role'.");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let cases = [
            ("temperature", json!("hot"), "temperature", "expected a number, but got a string (\"hot\")"),
            ("max_tokens", json!(1.5), "max_tokens", "expected an integer, but got a number (1.5)"),
            ("stream", json!("yes"), "stream", "expected a boolean"),
            ("stop", json!(5), "stop", "expected a string or an array of strings, but got an integer (5)"),
            ("stop", json!(["a", 1]), "stop[1]", "expected a string"),
            ("messages", json!({}), "messages", "expected an array, but got an object"),
            ("tools", json!([{"type": "function"}]), "tools[0].function", "Missing required parameter"),
            ("tool_choice", json!(3), "tool_choice", "expected \"none\", \"auto\""),
            ("response_format", json!({"type": "xml"}), "response_format.type", "'xml'"),
            ("seed", json!(1.5), "seed", "expected an integer"),
        ];
        for (field, value, param, needle) in cases {
            let mut body = base.clone();
            body[field] = value;
            let error = chat_error(body);
            assert_eq!(error.status, 400);
            assert_eq!(error.param.as_deref(), Some(param), "{field}: {}", error.message);
            assert!(error.message.contains(needle), "{field}: {}", error.message);
        }
    }

    #[test]
    fn nested_message_errors_keep_their_path() {
        let error = chat_error(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": 5}]}
        ]}));
        assert_eq!(error.param.as_deref(), Some("messages[1].content[0].text"));
        let error = chat_error(json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}));
        assert_eq!(error.param.as_deref(), Some("messages[0].role"));
        assert!(error.message.contains("'function'") && error.message.contains("'tool'"), "{}", error.message);
    }

    #[test]
    fn numbers_out_of_range_are_400() {
        let body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}"#;
        let error = parse_chat_request(body).unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.param.as_deref(), Some("temperature"));
        let body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 99999999999999999999}"#;
        let error = parse_chat_request(body).unwrap_err();
        assert_eq!((error.status, error.param.as_deref()), (400, Some("n")));
        let body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 18446744073709551615}"#;
        let error = parse_chat_request(body).unwrap_err();
        assert_eq!(error.message, "Invalid value for 'n': 18446744073709551615 is out of range.");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi", "extra": 1}],
                          "store": true, "metadata": {"a": "b"}, "service_tier": "auto"});
        assert!(parse_chat_request(body.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let mut body = String::from(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": "#);
        body.push_str(&"[".repeat(100_000));
        let error = parse_chat_request(body.as_bytes()).unwrap_err();
        assert_eq!(error.status, 400);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            prop_oneof![
                Just("user".to_string()),
                Just("assistant".to_string()),
                Just("tool".to_string()),
                Just("auto".to_string()),
                Just("json_schema".to_string()),
                ".{0,8}"
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("model".to_string()),
                Just("messages".to_string()),
                Just("role".to_string()),
                Just("content".to_string()),
                Just("prompt".to_string()),
                Just("type".to_string()),
                Just("text".to_string()),
                Just("stop".to_string()),
                Just("tools".to_string()),
                Just("tool_choice".to_string()),
                Just("function".to_string()),
                Just("name".to_string()),
                Just("n".to_string()),
                Just("logprobs".to_string()),
                Just("top_logprobs".to_string()),
                Just("response_format".to_string()),
                "[a-z_]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A valid request with one field replaced by an arbitrary value.
    fn arb_mutated_request(completion: bool) -> impl Strategy<Value = Value> {
        let fields = [
            "model",
            "messages",
            "prompt",
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "stream",
            "stream_options",
            "stop",
            "seed",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tools",
            "tool_choice",
            "logit_bias",
            "best_of",
            "echo",
            "suffix",
        ];
        (prop::sample::select(fields.to_vec()), arb_json()).prop_map(move |(field, value)| {
            let mut body = if completion {
                json!({"model": "m", "prompt": "Hello"})
            } else {
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})
            };
            body[field] = value;
            body
        })
    }

    fn check(result: Result<impl Sized, ApiError>) {
        if let Err(error) = result {
            assert_eq!(error.status, 400);
            assert_eq!(error.kind, "invalid_request_error");
            assert!(!error.message.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check(parse_chat_request(&bytes));
            check(parse_completion_request(&bytes));
        }

        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let bytes = value.to_string().into_bytes();
            check(parse_chat_request(&bytes));
            check(parse_completion_request(&bytes));
        }

        #[test]
        fn mutated_requests_never_panic(chat in arb_mutated_request(false), completion in arb_mutated_request(true)) {
            let chat = parse_chat_request(chat.to_string().as_bytes());
            if let Ok(request) = &chat {
                // Whatever validation accepts, the later stages accept without panicking.
                check(request.generation_params());
                check(request.prepare(crate::ToolFormat::Generic));
                check(request.prepare(crate::ToolFormat::Hermes));
            }
            check(chat);
            let completion = parse_completion_request(completion.to_string().as_bytes());
            if let Ok(request) = &completion {
                check(request.generation_params());
            }
            check(completion);
        }
    }
}
