//! Tokenizers from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`), through the
//! `tokenizers` crate, which implements their full pipeline (normalizers, pre-tokenizers, models).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::error::TokenizerError;
use crate::gguf::EOG_TEXTS;
use crate::pieces::{DetokenizeRules, Pieces};
use crate::unicode;
use crate::SpecialIds;

pub(crate) struct HfTokenizer {
    /// Splits special tokens written in the text out as their ids.
    parsing: tokenizers::Tokenizer,
    /// The same tokenizer told to treat special-token text as plain text; built on first use.
    literal: OnceLock<tokenizers::Tokenizer>,
}

/// Everything [`crate::Tokenizer`] needs from a Hugging Face tokenizer.
pub(crate) struct HfParts {
    pub tokenizer: HfTokenizer,
    pub pieces: Pieces,
    pub ids: SpecialIds,
    pub detokenize: DetokenizeRules,
    pub chat_template: Option<String>,
    pub bos_text: Option<String>,
    pub eos_text: Option<String>,
}

impl HfTokenizer {
    pub fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        let tokenizer = if parse_special {
            &self.parsing
        } else {
            self.literal.get_or_init(|| {
                let mut t = self.parsing.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        // Truncation and padding are switched off at load, which leaves nothing to fail on for
        // plain text input.
        if let Ok(enc) = tokenizer.encode_fast(text, false) {
            out.extend_from_slice(enc.get_ids());
        }
    }
}

fn read_json(path: &Path) -> Result<Json, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|e| TokenizerError::Json { path: path.into(), message: e.to_string() })
}

/// A special token entry in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string or a list of `{"name", "template"}`; the list's "default" wins.
fn chat_template(config: &Json) -> Option<String> {
    match config.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter().find(|t| t.get("name").and_then(Json::as_str) == Some(name))?.get("template")?.as_str()
            };
            named("default").or_else(|| list.first()?.get("template")?.as_str()).map(str::to_string)
        }
        _ => None,
    }
}

/// Does any decoder in the (possibly nested) decoder description have this type?
fn has_decoder(decoder: &Json, kind: &str) -> bool {
    match decoder {
        Json::Object(o) => {
            o.get("type").and_then(Json::as_str) == Some(kind)
                || o.get("decoders").is_some_and(|d| has_decoder(d, kind))
        }
        Json::Array(a) => a.iter().any(|d| has_decoder(d, kind)),
        _ => false,
    }
}

/// Whether decoding drops the space SentencePiece puts before the first word.
fn strips_leading_space(decoder: &Json) -> bool {
    let strip = |d: &Json| -> bool {
        match d.get("type").and_then(Json::as_str) {
            Some("Strip") => d.get("start").and_then(Json::as_u64).unwrap_or(0) > 0,
            Some("Metaspace") => d
                .get("prepend_scheme")
                .and_then(Json::as_str)
                .map_or_else(|| d.get("add_prefix_space").and_then(Json::as_bool).unwrap_or(false), |s| s != "never"),
            _ => false,
        }
    };
    strip(decoder) || decoder.get("decoders").and_then(Json::as_array).is_some_and(|ds| ds.iter().any(strip))
}

pub(crate) fn load(tokenizer_json: &Path, config_json: Option<&Path>) -> Result<HfParts, TokenizerError> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(tokenizer_json)
        .map_err(|e| TokenizerError::Json { path: tokenizer_json.into(), message: e.to_string() })?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| TokenizerError::Json { path: tokenizer_json.into(), message: e.to_string() })?;
    tokenizer.with_padding(None);
    let raw = read_json(tokenizer_json)?;
    let config = match config_json {
        Some(p) => read_json(p)?,
        None => Json::Null,
    };

    let decoder = raw.get("decoder").cloned().unwrap_or(Json::Null);
    let byte_level = has_decoder(&decoder, "ByteLevel");
    let added = tokenizer.get_added_tokens_decoder();
    let n = tokenizer.get_vocab_size(true);
    let pieces = Pieces::new((0..n as u32).map(|id| {
        if let Some(t) = added.get(&id) {
            return t.content.as_bytes().to_vec();
        }
        let Some(text) = tokenizer.id_to_token(id) else { return Vec::new() };
        if byte_level {
            text.chars()
                .flat_map(|c| match unicode::char_to_byte(c) {
                    Some(b) => vec![b],
                    None => c.to_string().into_bytes(),
                })
                .collect()
        } else if let Some(b) = byte_token(&text) {
            vec![b]
        } else {
            text.replace('▁', " ").into_bytes()
        }
    }));

    let id_of = |text: &Option<String>| text.as_deref().and_then(|t| tokenizer.token_to_id(t));
    let bos_text = token_text(config.get("bos_token"));
    let eos_text = token_text(config.get("eos_token"));
    let mut ids = SpecialIds {
        bos: id_of(&bos_text),
        eos: id_of(&eos_text),
        unk: id_of(&token_text(config.get("unk_token"))),
        ..SpecialIds::default()
    };
    ids.add_bos = match config.get("add_bos_token").and_then(Json::as_bool) {
        Some(b) => b,
        // Otherwise the post-processor decides: does it put BOS in front?
        None => {
            ids.bos.is_some_and(|bos| tokenizer.encode_fast("a", true).is_ok_and(|e| e.get_ids().first() == Some(&bos)))
        }
    };
    let mut eog: BTreeSet<u32> =
        added.iter().filter(|(_, t)| t.special && EOG_TEXTS.contains(&t.content.as_str())).map(|(&id, _)| id).collect();
    eog.extend(ids.eos);
    ids.eog = eog;

    let template = chat_template(&config).or_else(|| {
        // Newer Hugging Face repositories keep the template in its own file.
        let file: PathBuf = tokenizer_json.with_file_name("chat_template.jinja");
        std::fs::read_to_string(file).ok()
    });
    Ok(HfParts {
        pieces,
        ids,
        detokenize: DetokenizeRules {
            strip_leading_space: strips_leading_space(&decoder),
            clean_spaces: config.get("clean_up_tokenization_spaces").and_then(Json::as_bool).unwrap_or(false),
        },
        chat_template: template,
        bos_text,
        eos_text,
        tokenizer: HfTokenizer { parsing: tokenizer, literal: OnceLock::new() },
    })
}

/// `<0xAB>` byte-fallback tokens.
fn byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() == 2 {
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}
