//! Tokenizers built from GGUF metadata or tokenizer.json, and chat templates (minijinja).
//!
//! GGUF vocabularies (`tokenizer.ggml.model` "gpt2" byte-level BPE with its named
//! pre-tokenizers, and "llama" SentencePiece-style as Gemma uses) are tokenized by this crate's own
//! implementation of llama.cpp's algorithms, so ids match llama.cpp's for the same file and text.
//! Hugging Face `tokenizer.json` files go through the `tokenizers` crate. Either way the result is
//! one [`Tokenizer`]; chat templates are rendered by [`ChatTemplate`].

mod bpe;
mod error;
mod gguf;
mod hf;
mod pieces;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod template;
mod unicode;

use std::collections::BTreeSet;
use std::path::Path;

use tessera_formats::{Metadata, ModelSource};

pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use template::{ChatMessage, ChatTemplate};

use pieces::{DetokenizeRules, Pieces};

/// Special token ids and flags, however the tokenizer was described.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    /// Tokens that end generation.
    pub eog: BTreeSet<u32>,
    /// The model expects BOS in front of a prompt.
    pub add_bos: bool,
}

enum Engine {
    Gguf(Box<gguf::GgufTokenizer>),
    Hf(Box<hf::HfTokenizer>),
}

/// Text to token ids and back, for one model's vocabulary.
pub struct Tokenizer {
    engine: Engine,
    pieces: Pieces,
    ids: SpecialIds,
    detokenize: DetokenizeRules,
    chat_template: Option<String>,
    bos_text: String,
    eos_text: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.engine {
            Engine::Gguf(_) => "gguf",
            Engine::Hf(_) => "tokenizer.json",
        };
        f.debug_struct("Tokenizer").field("kind", &kind).field("vocab_size", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes in its `tokenizer.*` metadata.
    pub fn from_metadata(metadata: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let parts = gguf::load(metadata)?;
        let text_of = |id: Option<u32>| id.map(|i| String::from_utf8_lossy(parts.pieces.get(i)).into_owned());
        Ok(Tokenizer {
            bos_text: text_of(parts.ids.bos).unwrap_or_default(),
            eos_text: text_of(parts.ids.eos).unwrap_or_default(),
            engine: Engine::Gguf(Box::new(parts.tokenizer)),
            pieces: parts.pieces,
            ids: parts.ids,
            detokenize: parts.detokenize,
            chat_template: parts.chat_template,
        })
    }

    /// Builds a tokenizer from a Hugging Face `tokenizer.json`, with special tokens, BOS policy
    /// and chat template from `tokenizer_config.json` when given.
    pub fn from_json_file(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Tokenizer, TokenizerError> {
        let parts = hf::load(tokenizer_json, tokenizer_config_json)?;
        Ok(Tokenizer {
            engine: Engine::Hf(Box::new(parts.tokenizer)),
            pieces: parts.pieces,
            ids: parts.ids,
            detokenize: parts.detokenize,
            chat_template: parts.chat_template,
            bos_text: parts.bos_text.unwrap_or_default(),
            eos_text: parts.eos_text.unwrap_or_default(),
        })
    }

    /// The tokenizer of an opened model: its `tokenizer.json` if it has one, else its GGUF
    /// vocabulary (a GGUF file's own, or a Hugging Face directory's `tokenizer.gguf`).
    pub fn from_source(source: &ModelSource) -> Result<Tokenizer, TokenizerError> {
        match &source.tokenizer_json {
            Some(json) => Tokenizer::from_json_file(json, source.tokenizer_config_json.as_deref()),
            None if source.metadata.contains("tokenizer.ggml.tokens") => Tokenizer::from_metadata(&source.metadata),
            None => Err(TokenizerError::NoTokenizer(source.path.clone())),
        }
    }

    /// Token ids for `text`. With `add_bos`, BOS (if the vocabulary has one) comes first; with
    /// `parse_special`, special tokens written in the text (`<|im_start|>`) become their ids,
    /// otherwise they are tokenized as plain text. EOS is never appended.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.ids.bos);
        }
        match &self.engine {
            Engine::Gguf(t) => t.encode(text, parse_special, &mut out),
            Engine::Hf(t) => t.encode(text, parse_special, &mut out),
        }
        out
    }

    /// The text of `ids`, special tokens included as written; invalid UTF-8 (a sequence cut
    /// mid-character) becomes U+FFFD. For token-by-token output use [`StreamDecoder`].
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes = self.detokenize.apply(&self.pieces, ids);
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The raw bytes one token stands for: possibly part of a UTF-8 character (byte-level BPE,
    /// `<0xXX>` byte tokens); empty for ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.ids.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.ids.eos
    }

    /// True for tokens after which generation stops: EOS, end-of-turn and the other end markers
    /// llama.cpp recognises (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, ...).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.ids.eog.contains(&id)
    }

    /// All end-of-generation ids, for samplers that need the set.
    pub fn end_of_generation_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.eog.iter().copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the model expects BOS in front of a prompt (pass it as `encode`'s `add_bos`).
    pub fn add_bos_by_default(&self) -> bool {
        self.ids.add_bos
    }

    /// The model's own Jinja chat template, if its files carry one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The model's chat template, compiled, with this vocabulary's BOS and EOS texts.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>, TokenizerError> {
        self.chat_template.as_deref().map(|src| ChatTemplate::new(src, &self.bos_text, &self.eos_text)).transpose()
    }
}

#[cfg(test)]
mod tests;
