//! OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status
//! that goes with each.

use serde::{Deserialize, Serialize};

/// An error to send to a client: the HTTP status and the body OpenAI's API would send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault, in OpenAI's notation (`messages[0].content`).
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

/// The JSON body of an error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

pub(crate) const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), param: None, code: None }
    }

    /// 400 `invalid_request_error` about the request field `param`.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { param: Some(param.into()), ..ApiError::new(400, INVALID_REQUEST, message) }
    }

    /// 400 `invalid_request_error` not tied to one field.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, INVALID_REQUEST, message)
    }

    /// 400 when the prompt plus the requested completion does not fit the model's context;
    /// `param` is `messages` or `prompt`.
    pub fn context_length_exceeded(param: &str, context: u64, prompt_tokens: u64, max_tokens: u64) -> ApiError {
        let message = format!(
            "This model's maximum context length is {context} tokens. However, you requested {} tokens \
             ({prompt_tokens} in the {param}, {max_tokens} in the completion). Please reduce the length of the \
             {param} or completion.",
            prompt_tokens.saturating_add(max_tokens)
        );
        ApiError { code: Some("context_length_exceeded"), ..ApiError::invalid_param(param, message) }
    }

    /// 401 `authentication_error` (missing or wrong API key).
    pub fn authentication(message: impl Into<String>) -> ApiError {
        ApiError { code: Some("invalid_api_key"), ..ApiError::new(401, "authentication_error", message) }
    }

    /// 404 for a model this server does not serve (`code: model_not_found`, `param: model`).
    pub fn model_not_found(model: &str) -> ApiError {
        let message = format!("The model `{model}` does not exist or you do not have access to it.");
        ApiError { code: Some("model_not_found"), ..ApiError::invalid_param("model", message).with_status(404) }
    }

    /// 404 for a path this server does not serve.
    pub fn route_not_found(method: &str, path: &str) -> ApiError {
        ApiError {
            code: Some("not_found"),
            ..ApiError::new(404, INVALID_REQUEST, format!("Unknown request URL: {method} {path}."))
        }
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError {
            code: Some("method_not_allowed"),
            ..ApiError::new(405, INVALID_REQUEST, format!("Method {method} is not allowed for {path}."))
        }
    }

    /// 413 when the request body is larger than `limit_bytes`.
    pub fn payload_too_large(limit_bytes: u64) -> ApiError {
        ApiError {
            code: Some("request_too_large"),
            ..ApiError::new(
                413,
                INVALID_REQUEST,
                format!("The request body is larger than the limit of {limit_bytes} bytes."),
            )
        }
    }

    /// 429 `rate_limit_error` (`code: rate_limit_exceeded`): too many requests for this client.
    pub fn rate_limited(message: impl Into<String>) -> ApiError {
        ApiError { code: Some("rate_limit_exceeded"), ..ApiError::new(429, "rate_limit_error", message) }
    }

    /// 429 when the server's request queue is full (`code: queue_full`).
    pub fn queue_full() -> ApiError {
        ApiError {
            code: Some("queue_full"),
            ..ApiError::new(429, "rate_limit_error", "The server is busy: its request queue is full. Retry later.")
        }
    }

    /// 500 `server_error`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "server_error", message)
    }

    /// 503 `server_error` (`code: service_unavailable`): loading, draining or overloaded.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { code: Some("service_unavailable"), ..ApiError::new(503, "server_error", message) }
    }

    fn with_status(self, status: u16) -> ApiError {
        ApiError { status, ..self }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The JSON body to send.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }

    /// The body serialized as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings cannot fail.
        serde_json::to_string(&self.to_body()).unwrap_or_default()
    }

    /// The error as one server-sent event, for a failure after a stream has begun.
    pub fn to_sse(&self) -> String {
        crate::response::sse_event(&self.to_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_and_bodies() {
        let cases = [
            (ApiError::invalid_param("n", "bad"), 400, "invalid_request_error", Some("n"), None),
            (ApiError::authentication("no key"), 401, "authentication_error", None, Some("invalid_api_key")),
            (ApiError::model_not_found("gpt-9"), 404, "invalid_request_error", Some("model"), Some("model_not_found")),
            (ApiError::route_not_found("GET", "/v2"), 404, "invalid_request_error", None, Some("not_found")),
            (ApiError::method_not_allowed("GET", "/v1/completions"), 405, "invalid_request_error", None, None),
            (ApiError::payload_too_large(10), 413, "invalid_request_error", None, Some("request_too_large")),
            (ApiError::rate_limited("slow down"), 429, "rate_limit_error", None, Some("rate_limit_exceeded")),
            (ApiError::queue_full(), 429, "rate_limit_error", None, Some("queue_full")),
            (ApiError::internal("boom"), 500, "server_error", None, None),
            (ApiError::unavailable("loading"), 503, "server_error", None, Some("service_unavailable")),
        ];
        for (error, status, kind, param, code) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            let body = error.to_body();
            assert_eq!(body.error.kind, kind);
            assert_eq!(body.error.param.as_deref(), param);
            if let Some(code) = code {
                assert_eq!(body.error.code.as_deref(), Some(code));
            }
        }
    }

    #[test]
    fn body_matches_openai_shape() {
        let error = ApiError::model_not_found("gpt-9");
        let value: serde_json::Value = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(
            value,
            json!({"error": {
                "message": "The model `gpt-9` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found"
            }})
        );
        // A body without param and code still carries both keys, as OpenAI's does.
        let value: serde_json::Value = serde_json::from_str(&ApiError::internal("x").to_json()).unwrap();
        assert_eq!(value, json!({"error": {"message": "x", "type": "server_error", "param": null, "code": null}}));
        let back: ErrorBody = serde_json::from_value(value).unwrap();
        assert_eq!(back, ApiError::internal("x").to_body());
    }

    #[test]
    fn context_length_message_names_the_numbers() {
        let error = ApiError::context_length_exceeded("messages", 2048, 2000, 100);
        assert_eq!(error.status, 400);
        assert_eq!(error.code, Some("context_length_exceeded"));
        assert!(error.message.contains("2048") && error.message.contains("2100"), "{}", error.message);
    }
}
