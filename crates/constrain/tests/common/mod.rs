//! Test support: random walks through a constraint, the schemas they use, and a small JSON schema
//! validator for exactly the keywords those schemas use.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tessera_constrain::{Constraint, Vocabulary};

/// An object with required string (bounded length), integer (bounded), enum, array and nested
/// object fields, and an optional boolean.
pub fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["admin", "user", "guest"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
                "required": ["city"],
                "additionalProperties": false
            },
            "active": {"type": "boolean"},
            "score": {"type": ["number", "null"]}
        },
        "required": ["name", "age", "role", "tags", "address"],
        "additionalProperties": false
    })
}

/// The shape tool calling constrains to: calls to named tools with typed arguments, or a plain
/// response.
pub fn tool_call_schema() -> Value {
    let tool = |name: &str, arguments: Value| {
        json!({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"],
            "additionalProperties": false
        })
    };
    let weather = tool(
        "get_weather",
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": false
        }),
    );
    let search = tool(
        "search",
        json!({
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query", "limit"],
            "additionalProperties": false
        }),
    );
    json!({
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "tool_calls": {"type": "array", "items": {"anyOf": [weather, search]}, "minItems": 1}
                },
                "required": ["tool_calls"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
                "additionalProperties": false
            }
        ]
    })
}

/// What `{"type": "json_object"}` means: any object.
pub fn any_object_schema() -> Value {
    json!({"type": "object"})
}

/// Whether `v` satisfies `schema`, for the keywords the schemas above use; anything else in a
/// schema fails the check loudly rather than passing silently.
pub fn validate(v: &Value, schema: &Value) -> Result<(), String> {
    let s = schema.as_object().ok_or("schema is not an object")?;
    for key in s.keys() {
        let known = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "enum",
            "const",
            "items",
            "minItems",
            "maxItems",
            "anyOf",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("validator does not know keyword {key}"));
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err("bad type".into()),
        };
        if !types.iter().any(|t| has_type(v, t)) {
            return Err(format!("{v} is not of type {t}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{v} not in enum"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{v} is not {c}"));
        }
    }
    if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
        if !alts.iter().any(|alt| validate(v, alt).is_ok()) {
            return Err(format!("{v} matches no anyOf branch"));
        }
    }
    if let Some(x) = v.as_f64() {
        if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| x < m) {
            return Err(format!("{v} below minimum"));
        }
        if s.get("maximum").and_then(Value::as_f64).is_some_and(|m| x > m) {
            return Err(format!("{v} above maximum"));
        }
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m) {
            return Err(format!("{v} too short"));
        }
        if s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m) {
            return Err(format!("{v} too long"));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if s.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m) {
            return Err(format!("{v} has too few items"));
        }
        if s.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m) {
            return Err(format!("{v} has too many items"));
        }
        if let Some(item_schema) = s.get("items") {
            for item in items {
                validate(item, item_schema)?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for key in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().ok_or("bad required")?;
            if !obj.contains_key(key) {
                return Err(format!("{v} lacks required {key}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (key, value) in obj {
            match props.and_then(|p| p.get(key)) {
                Some(prop) => validate(value, prop)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => return Err(format!("{v} has extra property {key}")),
                    Some(extra @ Value::Object(_)) => validate(value, extra)?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0),
        _ => false,
    }
}

/// One finished random walk.
pub struct Walk {
    pub bytes: Vec<u8>,
    pub tokens: usize,
    /// Ended by committing an end-of-generation token (else the grammar finished by itself).
    pub ended_by_eos: bool,
    pub masks: usize,
    pub mask_time: Duration,
    pub max_mask_time: Duration,
    /// Compiling the schema into a constraint (set by `walk_schema`).
    pub compile_time: Duration,
}

/// Drives `constraint` with random allowed tokens until it ends, checking at every step that the
/// mask is non-empty, contains no `forbidden` token, and allows end-of-generation exactly when
/// the constraint says it accepts. The walk leans towards closing brackets and quotes as it grows
/// so that it ends. With `fast_forward`, forced tokens are taken after every commit.
pub fn random_walk(
    constraint: &mut Constraint,
    vocab: &Vocabulary,
    tokens: &[Vec<u8>],
    forbidden: &[u32],
    rng: &mut StdRng,
    fast_forward: bool,
) -> Walk {
    let mut walk = Walk {
        bytes: Vec::new(),
        tokens: 0,
        ended_by_eos: false,
        masks: 0,
        mask_time: Duration::ZERO,
        max_mask_time: Duration::ZERO,
        compile_time: Duration::ZERO,
    };
    let closes = |t: u32| tokens[t as usize].iter().any(|b| b"}]".contains(b));
    let quotes = |t: u32| tokens[t as usize].contains(&b'"');
    for step in 0..5000 {
        if constraint.is_finished() {
            return walk;
        }
        let start = Instant::now();
        let allowed = constraint.allowed_tokens().expect("mask");
        let elapsed = start.elapsed();
        walk.masks += 1;
        walk.mask_time += elapsed;
        walk.max_mask_time = walk.max_mask_time.max(elapsed);
        let allowed: Vec<u32> = allowed.iter().collect();
        assert!(!allowed.is_empty(), "empty mask after {:?}", String::from_utf8_lossy(&walk.bytes));
        for f in forbidden {
            assert!(!allowed.contains(f), "special token {f} allowed after {:?}", String::from_utf8_lossy(&walk.bytes));
        }
        let (eos, text): (Vec<u32>, Vec<u32>) = allowed.iter().partition(|&&t| vocab.is_end_of_generation(t));
        assert_eq!(!eos.is_empty(), constraint.is_accepting(), "after {:?}", String::from_utf8_lossy(&walk.bytes));
        let lean = if step < 30 { 0.2 } else { 0.8 };
        let token = if !eos.is_empty() && (text.is_empty() || rng.gen_bool(0.5)) {
            eos[rng.gen_range(0..eos.len())]
        } else {
            let closing: Vec<u32> = text.iter().copied().filter(|&t| closes(t)).collect();
            let quoting: Vec<u32> = text.iter().copied().filter(|&t| quotes(t)).collect();
            let pool = if !closing.is_empty() && rng.gen_bool(lean) {
                &closing
            } else if !quoting.is_empty() && rng.gen_bool(lean) {
                &quoting
            } else {
                &text
            };
            pool[rng.gen_range(0..pool.len())]
        };
        constraint.commit(token).expect("commit an allowed token");
        walk.tokens += 1;
        if vocab.is_end_of_generation(token) {
            assert!(constraint.is_finished());
            walk.ended_by_eos = true;
            return walk;
        }
        walk.bytes.extend_from_slice(&tokens[token as usize]);
        if fast_forward {
            for t in constraint.fast_forward().expect("fast forward") {
                walk.tokens += 1;
                walk.bytes.extend_from_slice(&tokens[t as usize]);
            }
        }
    }
    panic!("walk did not end: {:?}", String::from_utf8_lossy(&walk.bytes));
}

/// Walks `schema` `n` times and checks every output parses and validates; returns the walks.
pub fn walk_schema(
    vocab: &Vocabulary,
    tokens: &[Vec<u8>],
    forbidden: &[u32],
    schema: &Value,
    n: usize,
    rng: &mut StdRng,
    fast_forward: bool,
) -> Vec<Walk> {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let mut c = Constraint::json_schema(vocab, schema).expect("schema compiles");
            let compile_time = start.elapsed();
            let mut walk = random_walk(&mut c, vocab, tokens, forbidden, rng, fast_forward);
            let text = String::from_utf8(walk.bytes.clone()).expect("constrained output is UTF-8");
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
            if let Err(e) = validate(&value, schema) {
                panic!("{text} does not validate: {e}");
            }
            walk.compile_time = compile_time;
            walk
        })
        .collect()
}
