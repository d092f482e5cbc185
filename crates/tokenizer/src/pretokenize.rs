//! Pre-tokenizers for GGUF byte-level BPE vocabularies, selected by `tokenizer.ggml.pre`.
//!
//! Each pre-tokenizer is a list of steps applied in turn; every step re-splits the fragments the
//! previous one produced, never joining across them (llama.cpp's `unicode_regex_split`). The two
//! most common regexes (GPT-2's and Llama 3's) are hand-written state machines that reproduce
//! llama.cpp's own hand-written versions decision by decision, including where they differ from
//! a textbook regex engine; the others run on `fancy-regex`.

use fancy_regex::Regex;

use crate::error::TokenizerError;
use crate::unicode::{self, Flags};

const SINGLE_DIGITS: &str = r"\p{N}";
const PUNCTUATION_RUNS: &str = r"[\p{P}\$\+<=>\^~\|]+";
const DIGIT_TRIPLES: &str = "[0-9][0-9][0-9]";
const PORO: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CJK_RUNS: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";
const DEEPSEEK_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";
const DEEPSEEK_PUNCT: &str = r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+";

enum Step {
    /// The GPT-2 regex, hand-written.
    Gpt2,
    /// The Llama 3 regex (`max_digits` 3) or Qwen 2's (`max_digits` 1), hand-written; Qwen 3.5's
    /// variant also lets combining marks continue a word (`with_marks`).
    Llama3 {
        max_digits: usize,
        with_marks: bool,
    },
    Regex(Regex),
    /// Runs of newlines and runs of anything else (`[^\n]+|[\n]+`).
    Newlines,
}

/// How a named pre-tokenizer splits text, plus the vocabulary flags llama.cpp ties to the name.
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
    /// Words that are whole tokens skip the merges (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// Decoding removes spaces before punctuation (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
    /// The model adds BOS unless its metadata says otherwise.
    pub add_bos: bool,
    /// The vocabulary has no BOS token unless its metadata names one (ChatGLM).
    pub no_default_bos: bool,
    /// Merges run on GPT-2's byte-to-character mapping of the text (false: on the UTF-8 itself,
    /// with spaces written as `▁`, as Gemma 4 does).
    pub byte_level: bool,
}

enum S {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Newlines,
    Re(&'static str),
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value.
    pub fn for_name(name: &str) -> Result<PreTokenizer, TokenizerError> {
        use S::*;
        // (steps, clean_spaces, ignore_merges, add_bos, no_default_bos)
        let (steps, clean, ignore, bos, no_bos): (&[S], bool, bool, bool, bool) = match name {
            "" | "default" => {
                (&[Re(PUNCTUATION_RUNS), Gpt2, Re(r"\p{N}+"), Re(DIGIT_TRIPLES)], true, false, false, false)
            }
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
            | "jina-v5-nano" => (&[Llama3], true, true, true, false),
            "dbrx" | "smaug-bpe" => (&[Llama3], true, false, false, false),
            "chatglm-bpe" => (&[Llama3], true, false, false, true),
            "glm4" | "glm5" => (&[Llama3], true, true, false, true),
            "deepseek-llm" => (
                &[Re("[\r\n]"), Re(DEEPSEEK_LETTERS), Re(DEEPSEEK_PUNCT), Re(r"\s+$"), Re(CJK_RUNS), Re(r"\p{N}+")],
                false,
                false,
                false,
                false,
            ),
            "deepseek-coder" => (
                &[Re("[\r\n]"), Re(r"\s?\p{L}+"), Re(r"\s?\p{P}+"), Re(CJK_RUNS), Re(SINGLE_DIGITS)],
                false,
                false,
                false,
                false,
            ),
            "falcon" => (&[Re(PUNCTUATION_RUNS), Gpt2, Re(DIGIT_TRIPLES)], true, false, false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
            | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais"
            | "exaone4" => (&[Gpt2], true, false, false, false),
            "trillion" | "granite-docling" => (&[Gpt2], false, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                (&[Re(SINGLE_DIGITS), Gpt2], true, false, false, false)
            }
            "smollm" | "command-r" => (&[Re(SINGLE_DIGITS), Gpt2], false, false, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" | "grok-2" => {
                (&[Qwen2], false, false, false, false)
            }
            "stablelm2" | "megrez" => (&[Qwen2], true, false, false, false),
            "qwen35" => (&[Qwen35], false, false, false, false),
            "poro-chat" => (&[Re(PORO)], false, false, false, false),
            "bloom" | "gpt3-finnish" => (&[Re(PORO)], true, false, false, false),
            "viking" => (&[Re(PORO), Re(SINGLE_DIGITS)], false, false, false, false),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => (&[Re(GPT4O)], false, false, false, false),
            "tekken" => (&[Re(TEKKEN)], false, true, true, false),
            "gemma4" => (&[Newlines], true, false, false, false),
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        };
        let steps = steps
            .iter()
            .map(|s| match s {
                Gpt2 => Ok(Step::Gpt2),
                Llama3 => Ok(Step::Llama3 { max_digits: 3, with_marks: false }),
                Qwen2 => Ok(Step::Llama3 { max_digits: 1, with_marks: false }),
                Qwen35 => Ok(Step::Llama3 { max_digits: 1, with_marks: true }),
                Newlines => Ok(Step::Newlines),
                Re(pattern) => Regex::new(&unicode::pin_categories(pattern))
                    .map(Step::Regex)
                    .map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer regex {pattern:?}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreTokenizer {
            steps,
            ignore_merges: ignore,
            clean_spaces: clean,
            add_bos: bos,
            no_default_bos: no_bos,
            byte_level: name != "gemma4",
        })
    }

    /// Splits `text` into words; concatenated, the words give back `text`.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let cps: Vec<char> = text.chars().collect();
        let mut offsets = vec![cps.len()];
        let mut folded: Option<Folded> = None;
        for step in &self.steps {
            offsets = match step {
                Step::Gpt2 => split_gpt2(&cps, &offsets),
                Step::Llama3 { max_digits, with_marks } => split_llama3(&cps, &offsets, *max_digits, *with_marks),
                Step::Newlines => split_newlines(&cps, &offsets),
                Step::Regex(re) => split_regex(re, folded.get_or_insert_with(|| Folded::new(&cps)), &offsets),
            };
        }
        let mut byte_pos: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        byte_pos.push(text.len());
        let mut words = Vec::with_capacity(offsets.len());
        let mut start = 0;
        for len in offsets {
            words.push(&text[byte_pos[start]..byte_pos[start + len]]);
            start += len;
        }
        words
    }
}

/// The text the regex steps see: non-ASCII whitespace folded to U+000B, as llama.cpp does before
/// handing text to `std::regex` (whose `\s` knows only ASCII), so patterns with literal non-ASCII
/// spaces match exactly where llama.cpp's do.
struct Folded {
    text: String,
    /// Byte offset of each code point in `text`, plus the end.
    pos: Vec<usize>,
}

impl Folded {
    fn new(cps: &[char]) -> Folded {
        let mut text = String::with_capacity(cps.len());
        let mut pos = Vec::with_capacity(cps.len() + 1);
        for &c in cps {
            pos.push(text.len());
            text.push(if !c.is_ascii() && unicode::is_whitespace(c) { '\u{0B}' } else { c });
        }
        pos.push(text.len());
        Folded { text, pos }
    }
}

/// Emits word lengths (in code points) as a fragment is scanned.
struct Emitter<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Emitter<'_> {
    /// Ends a word at `end`; returns its length.
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// Code point access limited to one fragment: outside it, no character and empty flags.
struct Fragment<'a> {
    cps: &'a [char],
    ini: usize,
    end: usize,
}

impl Fragment<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.cps[pos])
    }

    fn flags(&self, pos: usize) -> Flags {
        self.cpt(pos).map(unicode::flags).unwrap_or_default()
    }

    /// Length of an English contraction (`'s`, `'re`, ...) starting at `pos`, if any.
    fn contraction(&self, pos: usize, fold_case: bool) -> Option<usize> {
        if self.cps[pos] != '\'' || pos + 1 >= self.end {
            return None;
        }
        let lower = |c: char| if fold_case { c.to_ascii_lowercase() } else { c };
        let next = lower(self.cps[pos + 1]);
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(2);
        }
        if pos + 2 < self.end {
            let next2 = lower(self.cps[pos + 2]);
            if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return Some(3);
            }
        }
        None
    }

    /// Whitespace run at `pos`: its length, and the end of its last `\r`/`\n` (0 if none).
    fn whitespace_run(&self, pos: usize) -> (usize, usize) {
        let mut n = 0;
        let mut last_newline_end = 0;
        while self.flags(pos + n).whitespace {
            if matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                last_newline_end = pos + n + 1;
            }
            n += 1;
        }
        (n, last_newline_end)
    }
}

fn not_word(f: Flags) -> bool {
    !(f.whitespace || f.is_letter() || f.is_number())
}

fn split_gpt2(cps: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let frag = Fragment { cps, ini: start, end: start + len };
        start += len;
        let mut em = Emitter { out: &mut out, prev_end: frag.ini };
        let mut pos = frag.ini;
        while pos < frag.end {
            if let Some(n) = frag.contraction(pos, false) {
                pos += em.add(pos + n);
                continue;
            }
            let space = cps[pos] == ' ';
            let mut f2 = if space { frag.flags(pos + 1) } else { frag.flags(pos) };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one class, continued while it holds.
            let class: Option<fn(Flags) -> bool> = if f2.is_letter() {
                Some(Flags::is_letter)
            } else if f2.is_number() {
                Some(Flags::is_number)
            } else if not_word(f2) && f2.is_some() {
                Some(|f| not_word(f) && f.is_some())
            } else {
                None
            };
            if let Some(holds) = class {
                pos += space as usize;
                while holds(f2) {
                    pos += 1;
                    f2 = frag.flags(pos);
                }
                em.add(pos);
                continue;
            }
            let (n_ws, _) = frag.whitespace_run(pos);
            if n_ws > 1 && frag.cpt(pos + n_ws).is_some() {
                // `\s+(?!\S)`: leave the last space to prefix the next word.
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            em.add(pos);
        }
    }
    out
}

fn split_llama3(cps: &[char], offsets: &[usize], max_digits: usize, with_marks: bool) -> Vec<usize> {
    let wordish = |f: Flags| f.is_letter() || (with_marks && f.is_mark());
    let not_word = |f: Flags| !(f.whitespace || wordish(f) || f.is_number());
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let frag = Fragment { cps, ini: start, end: start + len };
        start += len;
        let mut em = Emitter { out: &mut out, prev_end: frag.ini };
        let mut pos = frag.ini;
        while pos < frag.end {
            if let Some(n) = frag.contraction(pos, true) {
                pos += em.add(pos + n);
                continue;
            }
            let c = cps[pos];
            let f = frag.flags(pos);
            // `[^\r\n\p{L}\p{N}]?\p{L}+` (Qwen 3.5: `[\p{L}\p{M}]+`)
            if !(c == '\r' || c == '\n' || f.is_number()) && (wordish(f) || wordish(frag.flags(pos + 1))) {
                pos += 1;
                while wordish(frag.flags(pos)) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            // `\p{N}{1,max_digits}`
            if f.is_number() {
                let mut group_start = pos;
                while frag.flags(pos).is_number() {
                    pos += 1;
                    if pos - group_start >= max_digits {
                        em.add(pos);
                        group_start = pos;
                    }
                }
                em.add(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (Qwen 3.5 also excludes `\p{M}`)
            let mut f2 = if c == ' ' { frag.flags(pos + 1) } else { f };
            if not_word(f2) && f.is_some() {
                pos += (c == ' ') as usize;
                while not_word(f2) && f2.is_some() {
                    pos += 1;
                    f2 = frag.flags(pos);
                }
                while matches!(frag.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            let (n_ws, last_newline_end) = frag.whitespace_run(pos);
            if last_newline_end > 0 {
                // `\s*[\r\n]+`
                pos = last_newline_end;
            } else if n_ws > 1 && frag.cpt(pos + n_ws).is_some() {
                // `\s+(?!\S)`
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            em.add(pos);
        }
    }
    out
}

fn split_newlines(cps: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let frag = &cps[start..start + len];
        start += len;
        let mut run = 0;
        for (i, &c) in frag.iter().enumerate() {
            if i > 0 && (c == '\n') != (frag[i - 1] == '\n') {
                out.push(run);
                run = 0;
            }
            run += 1;
        }
        if run > 0 {
            out.push(run);
        }
    }
    out
}

/// Splits each fragment into regex matches and the gaps between them.
fn split_regex(re: &Regex, folded: &Folded, offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let (ini, end) = (start, start + len);
        start = end;
        let base = folded.pos[ini];
        let slice = &folded.text[base..folded.pos[end]];
        // Match offsets fall on character boundaries, so the search is exact.
        let to_cp = |byte: usize| ini + folded.pos[ini..=end].partition_point(|&p| p < base + byte);
        let mut done = ini;
        for m in re.find_iter(slice) {
            // A pattern that exhausts the backtracking budget leaves the rest of the fragment whole.
            let Ok(m) = m else { break };
            let (m_start, m_end) = (to_cp(m.start()), to_cp(m.end()));
            if m_start > done {
                out.push(m_start - done);
            }
            if m_end > m_start {
                out.push(m_end - m_start);
            }
            done = m_end;
        }
        if done < end {
            out.push(end - done);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str, text: &str) -> Vec<String> {
        PreTokenizer::for_name(name).unwrap().split(text).into_iter().map(String::from).collect()
    }

    #[test]
    fn gpt2_words_keep_one_leading_space() {
        assert_eq!(split("gpt-2", "Hello  world's 123!!"), ["Hello", " ", " world", "'s", " 123", "!!"]);
        assert_eq!(split("gpt-2", "a   \n b"), ["a", "   \n", " b"]);
        assert_eq!(split("gpt-2", "end  "), ["end", "  "]);
    }

    #[test]
    fn llama3_groups_digits_in_threes_and_keeps_newlines() {
        assert_eq!(split("llama-bpe", "1234567 x"), ["123", "456", "7", " x"]);
        assert_eq!(split("llama-bpe", "I'LL go\n\n  now"), ["I", "'LL", " go", "\n\n", " ", " now"]);
        assert_eq!(split("qwen2", "12"), ["1", "2"]);
    }

    #[test]
    fn smollm_isolates_every_digit_first() {
        assert_eq!(split("smollm", " 12ab"), [" ", "1", "2", "ab"]);
    }

    #[test]
    fn default_splits_punctuation_runs_first() {
        assert_eq!(split("default", "a,b 12345"), ["a", ",", "b", " ", "123", "45"]);
    }

    #[test]
    fn gemma4_splits_newline_runs() {
        assert_eq!(split("gemma4", "a b\n\ncd\n"), ["a b", "\n\n", "cd", "\n"]);
    }

    #[test]
    fn unknown_name_is_an_error() {
        assert!(PreTokenizer::for_name("no-such-thing").is_err());
    }

    /// The regexes the hand-written splitters implement.
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// Pre-tokenizers running the reference regexes, compiled once for all cases.
    fn by_regex(which: usize, text: &str) -> Vec<String> {
        static REFERENCE: std::sync::OnceLock<Vec<PreTokenizer>> = std::sync::OnceLock::new();
        let pres = REFERENCE.get_or_init(|| {
            [GPT2, LLAMA3, QWEN35]
                .iter()
                .map(|p| {
                    let re = Regex::new(&unicode::pin_categories(p)).unwrap();
                    PreTokenizer { steps: vec![Step::Regex(re)], ..PreTokenizer::for_name("gpt-2").unwrap() }
                })
                .collect()
        });
        pres[which].split(text).into_iter().map(String::from).collect()
    }

    fn tricky_text() -> impl proptest::strategy::Strategy<Value = String> {
        let chars = proptest::sample::select(vec![
            'a', 'Z', 's', 'S', 't', 'l', 'L', 'r', 'e', 'v', 'm', 'd', '\'', ' ', ' ', '\t', '\n', '\r', '\u{a0}',
            '\u{3000}', '1', '9', '½', '٣', '.', ',', '!', '-', '$', '🦙', '中', 'é', '\u{301}', '\u{200b}', '\u{378}',
            '\u{e000}',
        ]);
        proptest::collection::vec(chars, 0..24).prop_map(|v| v.into_iter().collect())
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hand_written_splitters_agree_with_their_regexes(text in tricky_text()) {
            prop_assert_eq!(split("gpt-2", &text), by_regex(0, &text));
            prop_assert_eq!(split("llama-bpe", &text), by_regex(1, &text));
            prop_assert_eq!(split("qwen35", &text), by_regex(2, &text));
        }
    }
}
