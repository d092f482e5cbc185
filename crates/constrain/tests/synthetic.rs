//! Constraints over a small byte-level vocabulary made up here: every single byte, some
//! multi-byte tokens, a control token and an end-of-generation token.

mod common;

use common::{any_object_schema, person_schema, tool_call_schema, validate, walk_schema};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tessera_constrain::{apply_mask, Constraint, ConstraintError, Vocabulary};

const MULTI: &[&str] = &[
    "{\"",
    "\":",
    "\": ",
    "\", \"",
    "\"}",
    "\"",
    "\",",
    "}}",
    "},",
    "]}",
    "[\"",
    "\"]",
    "true",
    "false",
    "null",
    "name",
    "age",
    "role",
    "admin",
    "tags",
    "address",
    "city",
    "tool_calls",
    "arguments",
    "response",
    "get_weather",
    "12",
    "345",
    "hello",
    " world",
    "  ",
    "\n",
    "\n  ",
    "0.5",
    "-",
    "e+",
    "\\n",
    "\\u00e9",
    "é",
    "日本",
];

struct Synthetic {
    vocab: Vocabulary,
    tokens: Vec<Vec<u8>>,
    control: u32,
    eos: u32,
}

fn synthetic() -> Synthetic {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.extend(MULTI.iter().map(|t| t.as_bytes().to_vec()));
    let control = tokens.len() as u32;
    tokens.push(b"<|im_start|>".to_vec());
    let eos = tokens.len() as u32;
    tokens.push(b"<|im_end|>".to_vec());
    let vocab = Vocabulary::new(tokens.clone(), &[control], &[eos]).expect("vocabulary");
    Synthetic { vocab, tokens, control, eos }
}

fn id(s: &Synthetic, text: &str) -> u32 {
    s.tokens.iter().position(|t| t == text.as_bytes()).expect("token in vocabulary") as u32
}

#[test]
fn random_walks_satisfy_their_schemas() {
    let s = synthetic();
    let mut rng = StdRng::seed_from_u64(7);
    for schema in [person_schema(), tool_call_schema(), any_object_schema()] {
        let walks = walk_schema(&s.vocab, &s.tokens, &[s.control], &schema, 20, &mut rng, false);
        assert!(walks.iter().all(|w| w.tokens > 1));
    }
    // Both shapes of the tool-call schema come out.
    let walks = walk_schema(&s.vocab, &s.tokens, &[s.control], &tool_call_schema(), 30, &mut rng, false);
    let calls = walks.iter().filter(|w| String::from_utf8_lossy(&w.bytes).contains("tool_calls")).count();
    assert!(calls > 0 && calls < walks.len(), "{calls} of {} walks called tools", walks.len());
}

#[test]
fn json_object_accepts_any_object_only() {
    let s = synthetic();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..20 {
        let mut c = Constraint::json_object(&s.vocab).unwrap();
        let walk = common::random_walk(&mut c, &s.vocab, &s.tokens, &[s.control], &mut rng, false);
        let v: serde_json::Value = serde_json::from_slice(&walk.bytes).unwrap();
        assert!(v.is_object(), "{v}");
        validate(&v, &any_object_schema()).unwrap();
    }
    // A top-level array or string is refused from the first token.
    let mut c = Constraint::json_object(&s.vocab).unwrap();
    assert!(!c.allowed_tokens().unwrap().contains(id(&s, "[")));
    assert!(!c.allowed_tokens().unwrap().contains(id(&s, "\"")));
}

#[test]
fn disallowed_commit_is_an_error_and_changes_nothing() {
    let s = synthetic();
    let mut c = Constraint::json_schema(&s.vocab, &person_schema()).unwrap();
    for bad in [id(&s, "a"), id(&s, "}"), s.control, s.eos, 100_000] {
        assert_eq!(c.commit(bad), Err(ConstraintError::TokenNotAllowed(bad)));
    }
    c.commit(id(&s, "{\"")).unwrap();
    // Only the declared keys may follow.
    assert!(c.commit(id(&s, "hello")).is_err());
    for t in ["name", "\":", "\""] {
        c.commit(id(&s, t)).unwrap();
    }
    // The control token is not text: never inside a string either.
    assert!(!c.allowed_tokens().unwrap().contains(s.control));
    assert!(c.allowed_tokens().unwrap().contains(id(&s, "hello")));
}

#[test]
fn end_of_generation_only_once_complete() {
    let s = synthetic();
    let mut c = Constraint::json_object(&s.vocab).unwrap();
    assert!(!c.is_accepting());
    let mut logits = vec![0.0f32; s.tokens.len()];
    apply_mask(&mut logits, c.allowed_tokens().unwrap());
    assert_eq!(logits[s.eos as usize], f32::NEG_INFINITY);
    assert_eq!(logits[id(&s, "{") as usize], 0.0);
    for t in ["{\"", "a", "\":", "12"] {
        c.commit(id(&s, t)).unwrap();
        assert!(!c.allowed_tokens().unwrap().contains(s.eos), "after {t}");
        assert!(!c.is_accepting());
        assert!(!c.is_finished());
    }
    c.commit(id(&s, "}")).unwrap();
    // Complete: either nothing can follow (finished) or end-of-generation is allowed.
    assert!(c.is_accepting());
    assert!(c.allowed_tokens().unwrap().contains(s.eos));
    c.commit(s.eos).unwrap();
    assert!(c.is_finished());
    assert_eq!(c.allowed_tokens().unwrap().iter().collect::<Vec<_>>(), [s.eos]);
    assert!(c.commit(id(&s, " ")).is_err());
}

#[test]
fn invalid_schemas_are_grammar_errors() {
    let s = synthetic();
    for schema in [
        json!({"type": "nonsense"}),
        json!({"$ref": "#/$defs/missing"}),
        json!({"type": "object", "properties": 5}),
        json!({"type": "string", "minLength": 5, "maxLength": 2}),
        json!({"type": "integer", "minimum": 10, "maximum": 1}),
        json!(42),
    ] {
        match Constraint::json_schema(&s.vocab, &schema) {
            Err(ConstraintError::Grammar(msg)) => assert!(!msg.is_empty() && !msg.contains('\n'), "{schema}: {msg}"),
            other => panic!("{schema}: expected a grammar error, got {other:?}"),
        }
    }
    assert!(matches!(Constraint::lark(&s.vocab, "start: undefined_rule"), Err(ConstraintError::Grammar(_))));
}

#[test]
fn annotations_refs_and_formats_are_accepted() {
    let s = synthetic();
    // The shape Pydantic and OpenAI tool definitions produce.
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Call",
        "description": "A call",
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time", "description": "d"},
            "item": {"$ref": "#/$defs/Item"},
            "n": {"type": "integer", "default": 1, "examples": [2]}
        },
        "required": ["item"],
        "additionalProperties": false,
        "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}
    });
    let mut c = Constraint::json_schema(&s.vocab, &schema).unwrap();
    assert!(c.allowed_tokens().unwrap().contains(id(&s, "{\"")));
}

#[test]
fn lark_grammar() {
    let s = synthetic();
    let mut c = Constraint::lark(&s.vocab, r#"start: "yes" | "no""#).unwrap();
    let allowed: Vec<u32> = c.allowed_tokens().unwrap().iter().collect();
    assert_eq!(allowed, [b'n' as u32, b'y' as u32]);
    for b in "no".bytes() {
        c.commit(b as u32).unwrap();
    }
    assert!(c.is_finished() || c.allowed_tokens().unwrap().iter().eq([s.eos]));
}

#[test]
fn constraints_are_independent_and_move_between_threads() {
    let s = synthetic();
    let mut a = Constraint::json_schema(&s.vocab, &tool_call_schema()).unwrap();
    let mut b = Constraint::json_schema(&s.vocab, &tool_call_schema()).unwrap();
    let (open, key) = (id(&s, "{\""), id(&s, "tool_calls"));
    a.commit(open).unwrap();
    assert!(b.allowed_tokens().unwrap().contains(open));
    assert!(!a.allowed_tokens().unwrap().contains(open));
    let a = std::thread::spawn(move || {
        a.commit(key).unwrap();
        a
    })
    .join()
    .unwrap();
    assert!(!a.is_finished());
}
