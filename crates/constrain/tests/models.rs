//! Constraints over the real vocabularies of the test models (skipped locally when a model is
//! missing, failed under CI). Prints the time per mask; asserts nothing about it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{any_object_schema, person_schema, tool_call_schema, walk_schema};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_constrain::{Constraint, ConstraintError, Vocabulary};
use tessera_formats::ModelSource;
use tessera_tokenizer::Tokenizer;

struct Model {
    tokenizer: Arc<Tokenizer>,
    vocab: Vocabulary,
    tokens: Vec<Vec<u8>>,
    /// Control tokens the test knows the model has.
    controls: Vec<u32>,
}

fn load(file: &str, control_texts: &[&str]) -> Option<Model> {
    let path = tessera_testkit::test_model(file)?;
    let source = ModelSource::open(&path).expect("open model");
    let tokenizer = Arc::new(Tokenizer::from_source(&source).expect("tokenizer"));
    let start = Instant::now();
    let vocab = Vocabulary::from_tokenizer(tokenizer.clone()).expect("vocabulary");
    eprintln!("{file}: vocabulary of {} tokens built in {:.0} ms", vocab.len(), start.elapsed().as_secs_f64() * 1e3);
    let tokens = (0..vocab.len() as u32).map(|id| tokenizer.token_bytes(id).to_vec()).collect();
    let controls = control_texts
        .iter()
        .map(|t| match tokenizer.encode(t, false, true)[..] {
            [id] => id,
            ref other => panic!("{t} is not one token: {other:?}"),
        })
        .collect();
    Some(Model { tokenizer, vocab, tokens, controls })
}

fn report(file: &str, what: &str, walks: &[common::Walk]) {
    let masks: usize = walks.iter().map(|w| w.masks).sum();
    let total: Duration = walks.iter().map(|w| w.mask_time).sum();
    let max = walks.iter().map(|w| w.max_mask_time).max().unwrap_or_default();
    let tokens: usize = walks.iter().map(|w| w.tokens).sum();
    let compile: Duration = walks.iter().map(|w| w.compile_time).sum();
    eprintln!(
        "{file} {what}: {} walks, {tokens} tokens, {masks} masks, {:.3} ms per mask (max {:.2} ms), \
         {:.2} ms per compile",
        walks.len(),
        total.as_secs_f64() * 1e3 / masks.max(1) as f64,
        max.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3 / walks.len().max(1) as f64,
    );
}

fn check_model(file: &str, control_texts: &[&str], walks: usize) {
    let Some(m) = load(file, control_texts) else { return };
    check_specials(file, &m);
    assert!(m.vocab.has_canonical_tokenizer(), "{file}: the model's tokenizer should round-trip");
    for &eog in m.vocab.end_of_generation() {
        assert!(m.tokenizer.is_end_of_generation(eog));
    }
    let mut rng = StdRng::seed_from_u64(3);
    for (name, schema) in
        [("person", person_schema()), ("tool calls", tool_call_schema()), ("json_object", any_object_schema())]
    {
        for fast_forward in [false, true] {
            let w = walk_schema(&m.vocab, &m.tokens, &m.controls, &schema, walks, &mut rng, fast_forward);
            report(file, &format!("{name}{}", if fast_forward { " +ff" } else { "" }), &w);
        }
    }

    // The mask at the start of an object allows "{" but not the control tokens or EOS.
    let mut c = Constraint::json_object(&m.vocab).unwrap();
    let open = m.tokenizer.encode("{", false, false)[0];
    let allowed = c.allowed_tokens().unwrap().clone();
    assert!(allowed.contains(open));
    for &t in m.controls.iter().chain(m.vocab.end_of_generation()) {
        assert!(!allowed.contains(t));
        assert_eq!(c.commit(t), Err(ConstraintError::TokenNotAllowed(t)));
    }

    // Fast-forward: text the grammar fixes comes back as the model's own tokens.
    let mut c = Constraint::lark(&m.vocab, r#"start: "The answer is: " /[0-9]+/"#).unwrap();
    let forced = c.fast_forward().unwrap();
    let text = m.tokenizer.decode(&forced);
    assert!(!forced.is_empty() && "The answer is: ".starts_with(&text), "{text:?}");
    assert_eq!(forced, m.tokenizer.encode(&text, false, false));
}

/// The special tokens found by encoding are the GGUF file's control and unknown tokens (token
/// types 3 and 2) plus the end-of-generation tokens.
fn check_specials(file: &str, m: &Model) {
    let path = tessera_testkit::test_model(file).expect("model");
    let source = ModelSource::open(&path).expect("open model");
    let types = source.metadata.i64_array("tokenizer.ggml.token_type").expect("token types");
    let expected: Vec<u32> = (0..m.vocab.len() as u32)
        .filter(|&id| matches!(types[id as usize], 2 | 3) || m.vocab.is_end_of_generation(id))
        .collect();
    let found: Vec<u32> = (0..m.vocab.len() as u32).filter(|&id| m.vocab.is_special(id)).collect();
    let texts = |ids: &[u32]| ids.iter().map(|&id| m.tokenizer.decode(&[id])).collect::<Vec<_>>();
    let missing: Vec<u32> = expected.iter().copied().filter(|id| !found.contains(id)).collect();
    let extra: Vec<u32> = found.iter().copied().filter(|id| !expected.contains(id)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {:?}, extra {:?}", texts(&missing), texts(&extra));
    eprintln!("{file}: {} special tokens", found.len());
}

#[test]
fn smollm2_vocabulary() {
    check_model(tessera_testkit::SMOLLM2, &["<|im_start|>", "<|im_end|>", "<|endoftext|>"], 10);
}

#[test]
fn gemma3_vocabulary() {
    check_model(tessera_testkit::GEMMA3_270M, &["<start_of_turn>", "<end_of_turn>", "<bos>"], 3);
}
