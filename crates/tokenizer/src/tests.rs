//! Tokenizer-level tests on small hand-made GGUF vocabularies.

use tessera_formats::{Metadata, Value};

use crate::{StreamDecoder, Tokenizer, TokenizerError};

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A SentencePiece vocabulary: specials, byte tokens for "é", and a few scored pieces.
fn spm_metadata() -> Metadata {
    let tokens = ["<unk>", "<s>", "</s>", "<end_of_turn>", "<unused0>", "<0xC3>", "<0xA9>", "▁", "h", "i", "▁h", "▁hi"];
    let types = [2, 3, 3, 3, 3, 6, 6, 1, 1, 1, 1, 1];
    let scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -2.0, -1.5];
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", Value::String("llama".into()));
    md.insert("tokenizer.ggml.tokens", strings(&tokens));
    md.insert("tokenizer.ggml.token_type", Value::Array(types.iter().map(|&t| Value::I32(t)).collect()));
    md.insert("tokenizer.ggml.scores", Value::Array(scores.iter().map(|&s| Value::F32(s)).collect()));
    md
}

/// A byte-level BPE vocabulary with the GPT-2 pre-tokenizer and one control token.
fn bpe_metadata() -> Metadata {
    let tokens = ["<|endoftext|>", "<|im_end|>", "a", "b", "Ġ", "Ġa", "ab", "Ġab", ",", "'", "s"];
    let types = [3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    md.insert("tokenizer.ggml.tokens", strings(&tokens));
    md.insert("tokenizer.ggml.token_type", Value::Array(types.iter().map(|&t| Value::I32(t)).collect()));
    md.insert("tokenizer.ggml.merges", strings(&["a b", "Ġ a", "Ġ ab"]));
    md.insert("tokenizer.ggml.bos_token_id", Value::U32(0));
    md.insert("tokenizer.ggml.eos_token_id", Value::U32(0));
    md
}

#[test]
fn spm_adds_the_dummy_prefix_and_falls_back_to_bytes() {
    let tok = Tokenizer::from_metadata(&spm_metadata()).unwrap();
    assert!(tok.add_bos_by_default());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.encode("hi", true, false), [1, 11]);
    assert_eq!(tok.encode("é", false, false), [7, 5, 6]);
    // After a special token the dummy prefix is added again.
    assert_eq!(tok.encode("hi<end_of_turn>hi", false, true), [11, 3, 11]);
    assert_eq!(tok.decode(&[11, 3, 11]), "hi<end_of_turn> hi");
    assert_eq!(tok.token_bytes(5), [0xC3]);
}

#[test]
fn end_of_generation_follows_llama_cpp_names() {
    let tok = Tokenizer::from_metadata(&spm_metadata()).unwrap();
    assert!(tok.is_end_of_generation(2), "eos");
    assert!(tok.is_end_of_generation(3), "<end_of_turn>");
    assert!(!tok.is_end_of_generation(4));
    assert_eq!(tok.end_of_generation_ids().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn bpe_merges_and_parses_special_tokens_on_request() {
    let tok = Tokenizer::from_metadata(&bpe_metadata()).unwrap();
    assert!(!tok.add_bos_by_default());
    assert_eq!(tok.encode("ab ab", false, false), [6, 7]);
    assert_eq!(tok.encode(" a<|im_end|>", false, true), [5, 1]);
    // Without special parsing the marker is text; characters the vocabulary lacks vanish.
    assert_eq!(tok.encode("<|im_end|>", false, false), Vec::<u32>::new());
    assert!(tok.is_end_of_generation(1), "<|im_end|> ends a turn");
}

#[test]
fn bpe_decoding_cleans_spaces_like_llama_cpp() {
    let tok = Tokenizer::from_metadata(&bpe_metadata()).unwrap();
    // "ab ," -> "ab," and " 's" -> "'s" (GPT-2's clean_up_tokenization_spaces).
    assert_eq!(tok.decode(&[6, 4, 8, 4, 9, 10]), "ab,'s");
}

#[test]
fn stream_decoder_joins_byte_tokens() {
    let tok = Tokenizer::from_metadata(&spm_metadata()).unwrap();
    let mut stream = StreamDecoder::new();
    let parts: Vec<String> = [11, 5, 6].iter().map(|&id| stream.push(tok.token_bytes(id))).collect();
    assert_eq!(parts, [" hi", "", "é"]);
}

#[test]
fn bad_metadata_is_reported() {
    let mut md = spm_metadata();
    md.insert("tokenizer.ggml.model", Value::String("rwkv".into()));
    assert!(matches!(Tokenizer::from_metadata(&md), Err(TokenizerError::UnsupportedModel(_))));
    let mut md = bpe_metadata();
    md.insert("tokenizer.ggml.pre", Value::String("no-such-pre".into()));
    assert!(matches!(Tokenizer::from_metadata(&md), Err(TokenizerError::UnsupportedPreTokenizer(_))));
    let mut md = spm_metadata();
    md.insert("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)]));
    assert!(matches!(Tokenizer::from_metadata(&md), Err(TokenizerError::Invalid(_))));
    assert!(matches!(Tokenizer::from_metadata(&Metadata::new()), Err(TokenizerError::Metadata(_))));
}

#[test]
fn tokenizers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
    shareable::<crate::ChatTemplate>();
}
