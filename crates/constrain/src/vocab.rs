//! One model's token table as llguidance sees it: a byte trie over every token, special tokens
//! set apart, the end-of-generation ids, and how text is tokenized when the grammar forces it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{panic_utils, ParserFactory};
use tessera_tokenizer::Tokenizer;

use crate::{first_line, ConstraintError};

/// Tokens longer than this are left out of the trie (never allowed): toktrie cannot hold tokens
/// with more than 1024 bytes, and no grammar needs one.
const MAX_TOKEN_BYTES: usize = 1000;

/// The token table of one model, built once and shared (cheap to clone) by every [`Constraint`]
/// made for that model.
///
/// [`Constraint`]: crate::Constraint
#[derive(Clone)]
pub struct Vocabulary {
    inner: Arc<Inner>,
}

struct Inner {
    factory: ParserFactory,
    end_of_generation: Vec<u32>,
    /// Sorted.
    special: Vec<u32>,
    size: usize,
    canonical: bool,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("size", &self.inner.size)
            .field("end_of_generation", &self.inner.end_of_generation)
            .field("canonical_tokenizer", &self.inner.canonical)
            .finish()
    }
}

/// How llguidance turns forced text into tokens.
enum Tokenize {
    /// Longest match over the trie. Not the model's tokenization, so llguidance never forces
    /// tokens with it; the model spells forced text itself under the mask.
    Greedy,
    /// The model's own tokenizer, checked to give back the bytes it was handed.
    Model(Arc<Tokenizer>),
}

struct Env {
    trie: TokTrie,
    tokenize: Tokenize,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        match &self.tokenize {
            Tokenize::Greedy => self.trie.greedy_tokenize(s),
            Tokenize::Model(tok) => {
                let ids = self.trie.tokenize_with_greedy_fallback(s, |text| tok.encode(text, false, false));
                // A tokenizer that adds or drops bytes (a SentencePiece prefix space) would
                // desynchronise llguidance; fall back to the trie for such inputs.
                if self.trie.decode_raw(&ids) == s {
                    ids
                } else {
                    self.trie.greedy_tokenize(s)
                }
            }
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        matches!(self.tokenize, Tokenize::Model(_))
    }
}

impl Vocabulary {
    /// A vocabulary from plain parts: `tokens[id]` is the bytes token `id` stands for; `special`
    /// ids (control tokens such as `<|im_start|>`) never appear inside constrained text;
    /// `end_of_generation` ids (at least one; treated as special too) are allowed only where the
    /// output is complete. Text the grammar forces is tokenized greedily over the trie, which is
    /// not the model's tokenization, so [`Constraint::fast_forward`] never forces tokens.
    ///
    /// [`Constraint::fast_forward`]: crate::Constraint::fast_forward
    pub fn new(
        tokens: Vec<Vec<u8>>,
        special: &[u32],
        end_of_generation: &[u32],
    ) -> Result<Vocabulary, ConstraintError> {
        Vocabulary::build(tokens, special, end_of_generation, Tokenize::Greedy)
    }

    /// The vocabulary of a model's tokenizer. Special tokens are the control tokens: those whose
    /// text becomes their id only when special tokens are parsed (found by encoding every token's
    /// text on all cores; with the trie and llguidance's tables, about a second for a 49k
    /// vocabulary and several for a 262k one, once per model). End-of-generation ids are
    /// the tokenizer's. Forced text is tokenized by the tokenizer itself, so
    /// [`Constraint::fast_forward`] can return tokens, unless the tokenizer does not give back the
    /// bytes of probe texts (a SentencePiece prefix space), in which case forced text falls back
    /// to greedy matching as in [`new`](Self::new).
    ///
    /// [`Constraint::fast_forward`]: crate::Constraint::fast_forward
    pub fn from_tokenizer(tokenizer: Arc<Tokenizer>) -> Result<Vocabulary, ConstraintError> {
        let n = u32::try_from(tokenizer.vocab_size())
            .map_err(|_| ConstraintError::Vocabulary(format!("{} tokens is too many", tokenizer.vocab_size())))?;
        let tokens: Vec<Vec<u8>> = (0..n).map(|id| tokenizer.token_bytes(id).to_vec()).collect();
        let special = control_tokens(&tokenizer, &tokens);
        let mut end: Vec<u32> = tokenizer.end_of_generation_ids().collect();
        if end.is_empty() {
            end.extend(tokenizer.eos_id());
        }
        let round_trips = ["{\"name\": \"value\", \"n\": [1, 2.5]}", "hello world"].iter().all(|probe| {
            tokenizer.encode(probe, false, false).iter().flat_map(|&id| tokenizer.token_bytes(id)).eq(probe.as_bytes())
        });
        let tokenize = if round_trips { Tokenize::Model(tokenizer) } else { Tokenize::Greedy };
        Vocabulary::build(tokens, &special, &end, tokenize)
    }

    fn build(
        mut tokens: Vec<Vec<u8>>,
        special: &[u32],
        end_of_generation: &[u32],
        tokenize: Tokenize,
    ) -> Result<Vocabulary, ConstraintError> {
        let size = tokens.len();
        let bad = |msg: String| Err(ConstraintError::Vocabulary(msg));
        // toktrie keeps ids in 24 bits, one value reserved.
        if size == 0 || size >= 0xff_ffff {
            return bad(format!("{size} tokens"));
        }
        let Some(&first_end) = end_of_generation.first() else {
            return bad("no end-of-generation token".into());
        };
        if let Some(&id) = special.iter().chain(end_of_generation).find(|&&id| id as usize >= size) {
            return bad(format!("token id {id} is outside the vocabulary of {size}"));
        }
        let mut special: Vec<u32> = special.iter().chain(end_of_generation).copied().collect();
        special.sort_unstable();
        special.dedup();
        let mut is_special = vec![false; size];
        for &id in &special {
            is_special[id as usize] = true;
        }
        for (bytes, special) in tokens.iter_mut().zip(is_special) {
            if bytes.len() > MAX_TOKEN_BYTES {
                bytes.clear();
            }
            // toktrie's convention: a special token's bytes are 0xFF followed by its name. 0xFF
            // never occurs in UTF-8, so text grammars cannot reach these tokens.
            if special {
                bytes.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        let canonical = matches!(tokenize, Tokenize::Model(_));
        let factory = panic_utils::catch_unwind(AssertUnwindSafe(|| {
            let info = TokRxInfo::new(size as u32, first_end);
            let trie = TokTrie::from(&info, &tokens).with_eos_tokens(end_of_generation);
            let env: TokEnv = Arc::new(Env { trie, tokenize });
            let mut factory = ParserFactory::new_simple(&env)?;
            factory.quiet();
            // Errors go back to API clients: no parser dumps in them.
            factory.limits_mut().verbose_errors = false;
            Ok(factory)
        }))
        .map_err(|e| ConstraintError::Vocabulary(first_line(e)))?;
        Ok(Vocabulary {
            inner: Arc::new(Inner { factory, end_of_generation: end_of_generation.to_vec(), special, size, canonical }),
        })
    }

    /// The number of token ids (masks range over `0..len()`).
    pub fn len(&self) -> usize {
        self.inner.size
    }

    /// Never true: a vocabulary has at least one token.
    pub fn is_empty(&self) -> bool {
        self.inner.size == 0
    }

    /// The ids that end generation; allowed only where the constrained output is complete.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.inner.end_of_generation
    }

    pub fn is_end_of_generation(&self, token: u32) -> bool {
        self.inner.end_of_generation.contains(&token)
    }

    /// Whether `token` is special (a control or end-of-generation token): never allowed inside
    /// constrained text.
    pub fn is_special(&self, token: u32) -> bool {
        self.inner.special.binary_search(&token).is_ok()
    }

    /// Whether forced text is tokenized by the model's tokenizer, so that
    /// [`Constraint::fast_forward`](crate::Constraint::fast_forward) can return tokens.
    pub fn has_canonical_tokenizer(&self) -> bool {
        self.inner.canonical
    }

    pub(crate) fn factory(&self) -> &ParserFactory {
        &self.inner.factory
    }
}

/// The control tokens: those whose text becomes their id only when special tokens are parsed.
/// (User-defined tokens, which plain text produces, are ordinary text.) Costs about one
/// tokenization of every token's text, spread over the available cores.
fn control_tokens(tokenizer: &Tokenizer, tokens: &[Vec<u8>]) -> Vec<u32> {
    let is_control = |id: u32| {
        let Some(text) = std::str::from_utf8(&tokens[id as usize]).ok().filter(|t| t.len() >= 2) else {
            return false;
        };
        // Most tokens come back as themselves from plain text, which settles them with one encode.
        tokenizer.encode(text, false, false) != [id] && tokenizer.encode(text, false, true) == [id]
    };
    let n = tokens.len() as u32;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, 16) as u32;
    let per_thread = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let ids = t * per_thread..((t + 1) * per_thread).min(n);
                scope.spawn(move || ids.filter(|&id| is_control(id)).collect::<Vec<u32>>())
            })
            .collect();
        // A worker can only fail by panicking inside the tokenizer; its tokens then count as text.
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes() -> Vec<Vec<u8>> {
        (0..=255u8).map(|b| vec![b]).collect()
    }

    #[test]
    fn rejects_unusable_parts() {
        let err = |r: Result<Vocabulary, ConstraintError>| matches!(r, Err(ConstraintError::Vocabulary(_)));
        assert!(err(Vocabulary::new(vec![], &[], &[0])));
        assert!(err(Vocabulary::new(bytes(), &[], &[])));
        assert!(err(Vocabulary::new(bytes(), &[], &[256])));
        assert!(err(Vocabulary::new(bytes(), &[1000], &[0])));
    }

    #[test]
    fn accepts_duplicates_empties_and_huge_tokens() {
        let mut tokens = bytes();
        tokens.push(b"a".to_vec());
        tokens.push(Vec::new());
        tokens.push(vec![b' '; 5000]);
        tokens.push(b"<eos>".to_vec());
        let vocab = Vocabulary::new(tokens, &[], &[259]).unwrap();
        assert_eq!(vocab.len(), 260);
        assert!(vocab.is_end_of_generation(259));
        assert!(!vocab.has_canonical_tokenizer());
    }
}
