//! Tokenizers described by GGUF metadata (`tokenizer.ggml.*`), built the way llama.cpp's
//! `llama_vocab::load` builds them so that token ids agree for the same file and text.

use std::collections::{BTreeSet, HashMap};

use tessera_formats::{Metadata, MetadataError};

use crate::bpe::Bpe;
use crate::error::TokenizerError;
use crate::pieces::{DetokenizeRules, Pieces};
use crate::pretokenize::PreTokenizer;
use crate::special::{Fragment, Partitioner, Special};
use crate::spm::Spm;
use crate::unicode;
use crate::SpecialIds;

/// llama.cpp's token attribute bits (`llama_token_attr`).
mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// Token texts that end a turn; llama.cpp finds EOT by these names when metadata does not say.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts that end generation (llama.cpp's EOG list).
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

enum Model {
    Spm { token_ids: HashMap<String, u32>, scores: Vec<f32>, byte_tokens: Box<[Option<u32>; 256]> },
    Bpe { bpe: Bpe, pre: PreTokenizer },
}

/// A GGUF vocabulary ready to encode.
pub(crate) struct GgufTokenizer {
    model: Model,
    partitioner: Partitioner,
    add_space_prefix: bool,
}

/// Everything [`crate::Tokenizer`] needs from a GGUF vocabulary.
pub(crate) struct GgufParts {
    pub tokenizer: GgufTokenizer,
    pub pieces: Pieces,
    pub ids: SpecialIds,
    pub detokenize: DetokenizeRules,
    pub chat_template: Option<String>,
}

impl GgufTokenizer {
    pub fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let frags = self.partitioner.partition(text, parse_special);
        match &self.model {
            Model::Spm { token_ids, scores, byte_tokens } => {
                let spm = Spm { token_ids, scores, byte_tokens };
                // SentencePiece's dummy prefix goes before text that starts the input or follows a
                // special token.
                let mut after_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Text(start, end) => {
                            let prefix = if self.add_space_prefix && after_special { " " } else { "" };
                            let escaped = format!("{prefix}{}", &text[start..end]).replace(' ', "▁");
                            spm.encode(&escaped, out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe { bpe, pre } => {
                for frag in frags {
                    match frag {
                        Fragment::Text(start, end) => {
                            let escaped;
                            let text = if pre.byte_level {
                                &text[start..end]
                            } else {
                                escaped = text[start..end].replace(' ', "▁");
                                &escaped
                            };
                            for word in pre.split(text) {
                                bpe.encode_word(word, out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
    }
}

fn opt_str<'m>(md: &'m Metadata, key: &str) -> Result<Option<&'m str>, MetadataError> {
    if md.contains(key) {
        md.str(key).map(Some)
    } else {
        Ok(None)
    }
}

fn token_attr(token_type: i64) -> u32 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

/// The token list with llama.cpp's per-token attributes.
struct Vocab {
    texts: Vec<String>,
    attrs: Vec<u32>,
    /// Texts to ids; a repeated text maps to its last id, as in llama.cpp's map.
    token_ids: HashMap<String, u32>,
}

impl Vocab {
    fn len(&self) -> usize {
        self.texts.len()
    }

    /// The id llama.cpp's text-to-id map gives `text` (the last of repeated texts).
    fn id_of(&self, text: &str) -> Option<usize> {
        self.token_ids.get(text).map(|&id| id as usize)
    }

    /// The lowest id among tokens with one of these texts (llama.cpp takes the first its hash map
    /// yields, which matters only if a vocabulary holds two candidates for one role).
    fn first_named(&self, names: &[&str]) -> Option<usize> {
        names.iter().filter_map(|name| self.id_of(name)).min()
    }
}

/// Fill-in-the-middle roles, in [`FIM_TEXTS`] order.
const FIM_KEYS: [&str; 6] = ["fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep"];
const FIM_TEXTS: [&[&str]; 6] =
    [FIM_PRE_TEXTS, FIM_SUF_TEXTS, FIM_MID_TEXTS, FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS];

/// Builds the tokenizer and its tables from `tokenizer.ggml.*` metadata.
pub(crate) fn load(md: &Metadata) -> Result<GgufParts, TokenizerError> {
    let model_name = md.str("tokenizer.ggml.model")?;
    let pre_name = opt_str(md, "tokenizer.ggml.pre")?.unwrap_or("");
    let pre = match model_name {
        "llama" => None,
        "gpt2" => Some(PreTokenizer::for_name(pre_name)?),
        "gemma4" => Some(PreTokenizer::for_name("gemma4")?),
        other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    };
    let is_spm = pre.is_none();
    // Gemma 4's BPE works on text with spaces written as "▁", like SentencePiece.
    let escape_spaces = pre.as_ref().is_some_and(|p| !p.byte_level);

    let texts: Vec<String> = md
        .str_array("tokenizer.ggml.tokens")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.to_string() })
        .collect();
    let n = texts.len();
    let n_u32 = u32::try_from(n).map_err(|_| TokenizerError::Invalid(format!("{n} tokens is too many")))?;
    let scores = md.opt("tokenizer.ggml.scores", Metadata::f32_array)?.unwrap_or_else(|| vec![0.0; n]);
    let types = md.opt("tokenizer.ggml.token_type", Metadata::i64_array)?;
    if scores.len() < n || types.as_ref().is_some_and(|t| t.len() < n) {
        return Err(TokenizerError::Invalid("fewer scores or token types than tokens".into()));
    }
    let attrs = match &types {
        Some(types) => types[..n].iter().map(|&t| token_attr(t)).collect(),
        None => vec![attr::NORMAL; n],
    };
    let token_ids = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut vocab = Vocab { texts, attrs, token_ids };

    // Defaults by tokenizer family, then what the metadata says.
    let in_range = |id: u32| ((id as usize) < n).then_some(id);
    let mut ids = SpecialIds::default();
    let (add_bos, add_space_prefix, clean_spaces) = match &pre {
        None => {
            (ids.bos, ids.eos, ids.unk) = (in_range(1), in_range(2), in_range(0));
            (true, true, false)
        }
        Some(_) if escape_spaces => (true, false, true),
        Some(pre) => {
            ids.bos = if pre.no_default_bos { None } else { in_range(11) };
            ids.eos = in_range(11);
            (pre.add_bos, false, pre.clean_spaces)
        }
    };
    let meta_id = |key: &str| {
        let value = md.get(&format!("tokenizer.ggml.{key}_token_id"))?.as_u64()?;
        in_range(u32::try_from(value).ok()?)
    };
    for (key, slot) in [
        ("bos", &mut ids.bos),
        ("eos", &mut ids.eos),
        ("eot", &mut ids.eot),
        ("eom", &mut ids.eom),
        ("unknown", &mut ids.unk),
    ] {
        *slot = meta_id(key).or(*slot);
    }
    // Older files name three of the fill-in-the-middle ids differently.
    let mut fim: [Option<u32>; 6] = std::array::from_fn(|i| {
        let old = ["prefix", "suffix", "middle"].get(i).and_then(|k| meta_id(k));
        old.or_else(|| meta_id(FIM_KEYS[i]))
    });
    // Gemma 4 always wants BOS, whatever its metadata says.
    ids.add_bos = md.opt("tokenizer.ggml.add_bos_token", Metadata::bool)?.unwrap_or(add_bos) || escape_spaces;
    let add_space_prefix = md.opt("tokenizer.ggml.add_space_prefix", Metadata::bool)?.unwrap_or(add_space_prefix);

    detect_named_tokens(&mut vocab, &mut ids, &mut fim);
    ids.eog = end_of_generation(&mut vocab, &ids, &fim);
    let pieces = Pieces::new((0..n).map(|id| piece(&vocab.texts[id], vocab.attrs[id], is_spm || escape_spaces)));
    strip_flags(md, pre_name, &mut vocab);
    let specials = (0..n)
        .filter(|&id| vocab.attrs[id] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
        .map(|id| Special {
            id: id as u32,
            text: vocab.texts[id].clone(),
            needs_parse_special: vocab.attrs[id] & (attr::CONTROL | attr::UNKNOWN) != 0,
            lstrip: vocab.attrs[id] & attr::LSTRIP != 0,
            rstrip: vocab.attrs[id] & attr::RSTRIP != 0,
        })
        .collect();

    let token_ids = vocab.token_ids;
    let model = match pre {
        None => {
            // A character no token covers becomes "<0xXX>" tokens, or single-byte tokens.
            let mut byte_tokens = Box::new([None; 256]);
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                let single = std::str::from_utf8(&[b as u8]).ok().and_then(|s| token_ids.get(s)).copied();
                *slot = token_ids.get(&format!("<0x{b:02X}>")).copied().or(single).or(ids.unk);
            }
            Model::Spm { token_ids, scores, byte_tokens }
        }
        Some(pre) => {
            let merges = md.str_array("tokenizer.ggml.merges")?;
            let bpe = Bpe::new(token_ids, n_u32, &merges, pre.byte_level, pre.ignore_merges);
            Model::Bpe { bpe, pre }
        }
    };
    Ok(GgufParts {
        tokenizer: GgufTokenizer { model, partitioner: Partitioner::new(specials), add_space_prefix },
        pieces,
        ids,
        detokenize: DetokenizeRules { strip_leading_space: add_space_prefix, clean_spaces },
        chat_template: opt_str(md, "tokenizer.chat_template")?.map(str::to_string),
    })
}

/// Finds end-of-turn and fill-in-the-middle tokens by name where the metadata does not give
/// them, and makes them control tokens so that they are parsed as specials; marks control tokens
/// named "unused" as unused.
fn detect_named_tokens(vocab: &mut Vocab, ids: &mut SpecialIds, fim: &mut [Option<u32>; 6]) {
    let roles = [(&mut ids.eot, EOT_TEXTS), (&mut ids.eom, &["<|eom_id|>"][..])];
    for (slot, names) in roles.into_iter().chain(fim.iter_mut().zip(FIM_TEXTS)) {
        if slot.is_none() {
            if let Some(id) = vocab.first_named(names) {
                *slot = Some(id as u32);
                vocab.attrs[id] |= attr::CONTROL;
            }
        }
    }
    for id in 0..vocab.len() {
        let text = &vocab.texts[id];
        if vocab.attrs[id] & attr::CONTROL != 0 && text.contains("unused") && vocab.id_of(text) == Some(id) {
            vocab.attrs[id] |= attr::UNUSED;
        }
    }
}

/// The tokens that end generation: EOS, EOT, EOM, FIM pad/repo/separator and every token named
/// like an end marker, less the exceptions llama.cpp makes for particular vocabularies.
fn end_of_generation(vocab: &mut Vocab, ids: &SpecialIds, fim: &[Option<u32>; 6]) -> BTreeSet<u32> {
    let mut eog: BTreeSet<u32> = fim[3..].iter().flatten().copied().collect();
    for name in EOG_TEXTS {
        if let Some(id) = vocab.id_of(name) {
            eog.insert(id as u32);
            vocab.attrs[id] |= attr::CONTROL;
        }
    }
    // gpt-oss's structural tokens are always rendered.
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.id_of(name) {
            vocab.attrs[id] = attr::USER_DEFINED;
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    // Vocabularies with "<|return|>"/"<|call|>" (gpt-oss) or "<|calls|>"/"<|flush|>" (Solar Open)
    // use "<|end|>" mid-turn; those with "<|tool_response>" or "<|plamo:eos|>" have a plain "</s>".
    let texts = &vocab.texts;
    let find = |eog: &BTreeSet<u32>, t: &str| eog.iter().copied().rfind(|&id| texts[id as usize] == t);
    if let Some(end) = find(&eog, "<|end|>") {
        let has_call = find(&eog, "<|call|>").is_some() || find(&eog, "<|calls|>").is_some();
        if has_call && (find(&eog, "<|return|>").is_some() || find(&eog, "<|flush|>").is_some()) {
            eog.remove(&end);
            vocab.attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    if let Some(s) = find(&eog, "</s>") {
        if find(&eog, "<|tool_response>").is_some() || find(&eog, "<|plamo:eos|>").is_some() {
            eog.remove(&s);
            vocab.attrs[s as usize] = attr::NORMAL;
        }
    }
    eog
}

/// The bytes a token decodes to (llama.cpp's `token_to_piece` with special tokens rendered);
/// `spaces_escaped` vocabularies write spaces as "▁" instead of GPT-2's byte mapping.
fn piece(text: &str, attrs: u32, spaces_escaped: bool) -> Vec<u8> {
    if attrs & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        text.as_bytes().to_vec()
    } else if attrs & attr::NORMAL != 0 {
        if spaces_escaped {
            text.replace('▁', " ").into_bytes()
        } else {
            byte_level_decode(text)
        }
    } else if attrs & attr::BYTE != 0 {
        // "<0xXX>": the digits after "<0x", as strtol reads them.
        let digits = text.get(3..).unwrap_or("");
        let hex: String = digits.chars().take(2).take_while(char::is_ascii_hexdigit).collect();
        vec![u8::from_str_radix(&hex, 16).unwrap_or(0)]
    } else {
        Vec::new()
    }
}

/// Maps GPT-2 byte-level characters back to bytes; characters outside the table are spelled out
/// the way llama.cpp does, so odd vocabularies still decode identically.
fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's per-model whitespace stripping around some special tokens, keyed on names.
fn strip_flags(md: &Metadata, pre: &str, vocab: &mut Vocab) {
    let name = opt_str(md, "general.name").ok().flatten().unwrap_or("").to_lowercase();
    let arch = opt_str(md, "general.architecture").ok().flatten().unwrap_or("");
    let token_ids = &vocab.token_ids;
    let set = |attrs: &mut [u32], text: &str, flag: u32, on: bool| {
        if let Some(&id) = token_ids.get(text) {
            let a = &mut attrs[id as usize];
            *a = if on { *a | flag } else { *a & !flag };
        }
    };
    let attrs = &mut vocab.attrs;
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"].iter().any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"].iter().any(|a| arch.contains(a))
    {
        set(attrs, "<mask>", attr::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for a in attrs.iter_mut() {
            if *a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 {
                *a |= attr::RSTRIP;
            }
        }
        set(attrs, "</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(attrs, t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(attrs, "[MASK]", attr::LSTRIP, true);
    }
}
