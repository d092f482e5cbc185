//! A reference model's log-probabilities saved to a file, so that models can be compared with it
//! later without running it again (llama-perplexity's `--kl-divergence-base`).
//!
//! Little-endian throughout:
//!
//! ```text
//! magic  "TESSKLB\0"          8 bytes
//! version                     u32 = 1
//! vocab, n_ctx, chunks        u32 × 3
//! name length, name           u32, UTF-8 bytes (the reference model, for reports)
//! weight bytes, weight values, total bytes      u64 × 3 (its WeightStats)
//! tokens                      u32 × chunks × n_ctx, every chunk as evaluated (BOS in place)
//! rows, chunk after chunk, (n_ctx - 1 - n_ctx / 2) per chunk:
//!     target log-prob f32, top token u32, scale f32, min f32, vocab × u16
//! ```
//!
//! The header names the vocabulary, the context and the tokens, so reusing a file with other
//! models, another context or another text is refused with the reason.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::eval::{LogProbRows, RowHead, WeightStats};
use crate::perplexity::ScoredChunks;
use crate::RuntimeError;

const MAGIC: &[u8; 8] = b"TESSKLB\0";
const VERSION: u32 = 1;
/// Bounds that keep a damaged header from asking for absurd amounts of memory.
const MAX_VOCAB: usize = 1 << 24;
const MAX_CTX: usize = 1 << 24;
const MAX_TOKENS: usize = 1 << 31;
const MAX_NAME: usize = 4096;
/// Bytes of a row before its values: target log-prob, top, scale, min.
const ROW_HEAD_BYTES: usize = 16;

/// What a KL base file says about the run that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct KlBaseHeader {
    pub vocab: usize,
    /// The chunks the reference was scored on, as evaluated.
    pub chunks: ScoredChunks,
    /// The reference model, as the report named it.
    pub source_name: String,
    pub source_weights: WeightStats,
}

impl KlBaseHeader {
    fn encode(&self) -> Result<Vec<u8>, RuntimeError> {
        let invalid = |what: String| Err(RuntimeError::Invalid(format!("cannot save a KL base: {what}")));
        if self.vocab == 0 || self.vocab > MAX_VOCAB {
            return invalid(format!("vocabulary of {} tokens", self.vocab));
        }
        if self.source_name.len() > MAX_NAME {
            return invalid(format!("a model name of {} bytes (at most {MAX_NAME})", self.source_name.len()));
        }
        let tokens = self.chunks.tokens();
        let mut out = Vec::with_capacity(64 + self.source_name.len() + tokens.len() * 4);
        out.extend_from_slice(MAGIC);
        for v in [VERSION as usize, self.vocab, self.chunks.n_ctx(), self.chunks.len(), self.source_name.len()] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(self.source_name.as_bytes());
        let w = &self.source_weights;
        for v in [w.weight_bytes, w.weight_values, w.total_bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for t in tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        Ok(out)
    }

    /// Bytes of the whole file this header starts.
    fn file_len(&self) -> Option<u64> {
        let header = 8 + 4 * 5 + self.source_name.len() + 8 * 3 + 4 * self.chunks.tokens().len();
        let row = ROW_HEAD_BYTES as u64 + 2 * self.vocab as u64;
        let rows = (self.chunks.len() as u64).checked_mul(self.chunks.scored_per_chunk() as u64)?;
        rows.checked_mul(row)?.checked_add(header as u64)
    }
}

/// Writes a KL base chunk by chunk.
pub struct KlBaseWriter<W: Write = BufWriter<File>> {
    out: W,
    vocab: usize,
    rows_per_chunk: usize,
    chunks_left: usize,
}

impl KlBaseWriter {
    /// Creates (or replaces) the file at `path`.
    pub fn create(path: &Path, header: &KlBaseHeader) -> Result<KlBaseWriter, RuntimeError> {
        let file = File::create(path)
            .map_err(|e| RuntimeError::Invalid(format!("cannot create KL base {}: {e}", path.display())))?;
        KlBaseWriter::new(BufWriter::new(file), header)
    }
}

impl<W: Write> KlBaseWriter<W> {
    /// Writes `header` to `out`; the chunks follow with [`KlBaseWriter::write_chunk`].
    pub fn new(mut out: W, header: &KlBaseHeader) -> Result<KlBaseWriter<W>, RuntimeError> {
        out.write_all(&header.encode()?).map_err(write_error)?;
        Ok(KlBaseWriter {
            out,
            vocab: header.vocab,
            rows_per_chunk: header.chunks.scored_per_chunk(),
            chunks_left: header.chunks.len(),
        })
    }

    /// Appends the next chunk's rows.
    pub fn write_chunk(&mut self, rows: &LogProbRows) -> Result<(), RuntimeError> {
        if self.chunks_left == 0 {
            return Err(RuntimeError::Invalid("KL base: more chunks written than its header announced".into()));
        }
        if rows.vocab() != self.vocab || rows.len() != self.rows_per_chunk {
            return Err(RuntimeError::Invalid(format!(
                "KL base: a chunk of {} rows × {} values, expected {} × {}",
                rows.len(),
                rows.vocab(),
                self.rows_per_chunk,
                self.vocab
            )));
        }
        let mut buf = Vec::with_capacity(ROW_HEAD_BYTES + 2 * self.vocab);
        for r in 0..rows.len() {
            buf.clear();
            let h = rows.head(r);
            buf.extend_from_slice(&h.target_log_prob.to_le_bytes());
            buf.extend_from_slice(&h.top.to_le_bytes());
            buf.extend_from_slice(&h.scale.to_le_bytes());
            buf.extend_from_slice(&h.min.to_le_bytes());
            buf.extend(rows.values(r).iter().flat_map(|v| v.to_le_bytes()));
            self.out.write_all(&buf).map_err(write_error)?;
        }
        self.chunks_left -= 1;
        Ok(())
    }

    /// Flushes the file; every chunk the header announced must have been written.
    pub fn finish(&mut self) -> Result<(), RuntimeError> {
        if self.chunks_left != 0 {
            return Err(RuntimeError::Invalid(format!("KL base: {} chunks were never written", self.chunks_left)));
        }
        self.out.flush().map_err(write_error)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn write_error(e: std::io::Error) -> RuntimeError {
    RuntimeError::Invalid(format!("writing KL base: {e}"))
}

/// Reads a KL base: the header at once, then the chunks in order.
pub struct KlBaseReader<R: Read = BufReader<File>> {
    input: R,
    /// How errors name the file.
    name: String,
    header: KlBaseHeader,
    chunks_read: usize,
}

impl KlBaseReader {
    /// Opens the file at `path` and checks that its length is what its header implies.
    pub fn open(path: &Path) -> Result<KlBaseReader, RuntimeError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| RuntimeError::Invalid(format!("cannot read KL base {name}: {e}")))?;
        let actual = file.metadata().map_err(|e| RuntimeError::Invalid(format!("{name}: {e}")))?.len();
        let reader = KlBaseReader::new(BufReader::new(file), &name)?;
        match reader.header.file_len() {
            Some(expected) if expected == actual => Ok(reader),
            Some(expected) if expected > actual => {
                Err(reader.corrupt(format!("truncated: {actual} bytes, its header announces {expected}")))
            }
            _ => Err(reader.corrupt(format!("{actual} bytes, more than its header announces"))),
        }
    }
}

impl<R: Read> KlBaseReader<R> {
    /// Reads and checks the header from `input`; `name` is how errors refer to it.
    pub fn new(mut input: R, name: &str) -> Result<KlBaseReader<R>, RuntimeError> {
        let corrupt = |what: String| RuntimeError::Invalid(format!("{name}: not a usable KL base: {what}"));
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic, name)?;
        if &magic != MAGIC {
            return Err(corrupt("it does not start with a KL base's signature (save one with --save-kl-base)".into()));
        }
        let mut fields = [0u32; 5];
        for f in &mut fields {
            *f = read_u32(&mut input, name)?;
        }
        let [version, vocab, n_ctx, chunks, name_len] = fields.map(|v| v as usize);
        if version != VERSION as usize {
            return Err(corrupt(format!("version {version}, this Tessera reads version {VERSION}")));
        }
        if vocab == 0 || vocab > MAX_VOCAB {
            return Err(corrupt(format!("vocabulary of {vocab} tokens")));
        }
        if n_ctx > MAX_CTX {
            return Err(corrupt(format!("context of {n_ctx} tokens")));
        }
        if name_len > MAX_NAME {
            return Err(corrupt(format!("a model name of {name_len} bytes")));
        }
        let source_name = String::from_utf8(read_vec(&mut input, name_len, name)?)
            .map_err(|_| corrupt("the model name is not UTF-8".into()))?;
        let mut sizes = [0u64; 3];
        for s in &mut sizes {
            let mut b = [0u8; 8];
            read_exact(&mut input, &mut b, name)?;
            *s = u64::from_le_bytes(b);
        }
        let n_tokens = chunks.checked_mul(n_ctx).filter(|&n| n <= MAX_TOKENS);
        let n_tokens = n_tokens.ok_or_else(|| corrupt(format!("{chunks} chunks of {n_ctx} tokens")))?;
        let bytes = read_vec(&mut input, n_tokens * 4, name)?;
        let tokens: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(corrupt(format!("token {t} is outside its vocabulary of {vocab}")));
        }
        let chunks = ScoredChunks::from_tokens(tokens, n_ctx).map_err(|e| corrupt(e.to_string()))?;
        let [weight_bytes, weight_values, total_bytes] = sizes;
        let header = KlBaseHeader {
            vocab,
            chunks,
            source_name,
            source_weights: WeightStats { weight_bytes, weight_values, total_bytes },
        };
        Ok(KlBaseReader { input, name: name.to_string(), header, chunks_read: 0 })
    }

    pub fn header(&self) -> &KlBaseHeader {
        &self.header
    }

    /// How errors name the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn corrupt(&self, what: String) -> RuntimeError {
        RuntimeError::Invalid(format!("{}: not a usable KL base: {what}", self.name))
    }

    /// Refuses to compare on `chunks` unless they are the file's (or its first chunks): same
    /// context, same tokens.
    pub fn check_chunks(&self, chunks: &ScoredChunks) -> Result<(), RuntimeError> {
        let saved = &self.header.chunks;
        if chunks.n_ctx() != saved.n_ctx() {
            return Err(RuntimeError::Invalid(format!(
                "{} was saved with a context of {} tokens, not {}",
                self.name,
                saved.n_ctx(),
                chunks.n_ctx()
            )));
        }
        if chunks.len() > saved.len() {
            return Err(RuntimeError::Invalid(format!(
                "{} holds {} chunks; {} were asked for",
                self.name,
                saved.len(),
                chunks.len()
            )));
        }
        if let Some(i) = chunks.tokens().iter().zip(saved.tokens()).position(|(a, b)| a != b) {
            return Err(RuntimeError::Invalid(format!(
                "{} was saved from other tokens (they differ at token {i}): another text or another tokenizer",
                self.name
            )));
        }
        Ok(())
    }

    /// Reads the next chunk's rows.
    pub fn read_chunk(&mut self) -> Result<LogProbRows, RuntimeError> {
        let chunks = &self.header.chunks;
        if self.chunks_read == chunks.len() {
            return Err(self.corrupt(format!("all its {} chunks have been read", chunks.len())));
        }
        let (vocab, n_rows) = (self.header.vocab, chunks.scored_per_chunk());
        let mut rows = LogProbRows::with_capacity(vocab, n_rows.min(64));
        let mut buf = vec![0u8; ROW_HEAD_BYTES + 2 * vocab];
        let mut values = vec![0u16; vocab];
        for _ in 0..n_rows {
            read_exact(&mut self.input, &mut buf, &self.name)?;
            let f = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
            let head = RowHead {
                target_log_prob: f32::from_le_bytes(f(0)),
                top: u32::from_le_bytes(f(4)),
                scale: f32::from_le_bytes(f(8)),
                min: f32::from_le_bytes(f(12)),
            };
            if head.top as usize >= vocab || !head.scale.is_finite() || !head.min.is_finite() {
                return Err(self.corrupt(format!("a damaged row in chunk {}", self.chunks_read + 1)));
            }
            for (v, b) in values.iter_mut().zip(buf[ROW_HEAD_BYTES..].chunks_exact(2)) {
                *v = u16::from_le_bytes([b[0], b[1]]);
            }
            rows.push_stored(head, &values);
        }
        self.chunks_read += 1;
        Ok(rows)
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], name: &str) -> Result<(), RuntimeError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => RuntimeError::Invalid(format!("{name}: not a usable KL base: truncated")),
        _ => RuntimeError::Invalid(format!("reading KL base {name}: {e}")),
    })
}

fn read_u32(input: &mut impl Read, name: &str) -> Result<u32, RuntimeError> {
    let mut b = [0u8; 4];
    read_exact(input, &mut b, name)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads `len` bytes, growing the buffer only as data arrives (a damaged length cannot make it
/// allocate more than the input holds).
fn read_vec(input: &mut impl Read, len: usize, name: &str) -> Result<Vec<u8>, RuntimeError> {
    let mut out = Vec::new();
    input
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| RuntimeError::Invalid(format!("reading KL base {name}: {e}")))?;
    if out.len() != len {
        return Err(RuntimeError::Invalid(format!("{name}: not a usable KL base: truncated")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 40;

    fn header() -> KlBaseHeader {
        let tokens: Vec<u32> = (0..64).map(|i| (i * 7 % VOCAB) as u32).collect();
        KlBaseHeader {
            vocab: VOCAB,
            chunks: ScoredChunks::from_tokens(tokens, 32).expect("chunks"),
            source_name: "reference.gguf".into(),
            source_weights: WeightStats { weight_bytes: 1000, weight_values: 2000, total_bytes: 1100 },
        }
    }

    fn chunk_rows(h: &KlBaseHeader, c: usize) -> LogProbRows {
        let targets = h.chunks.targets(c);
        let logits: Vec<f32> =
            (0..targets.len() * VOCAB).map(|i| ((i * 31 + c * 5) % 17) as f32 * 0.9 - (i % 3) as f32 * 9.0).collect();
        LogProbRows::quantize(&logits, VOCAB, targets).expect("rows")
    }

    fn saved(h: &KlBaseHeader) -> Vec<u8> {
        let mut w = KlBaseWriter::new(Vec::new(), h).expect("header");
        for c in 0..h.chunks.len() {
            w.write_chunk(&chunk_rows(h, c)).expect("chunk");
        }
        w.finish().expect("complete");
        w.into_inner()
    }

    #[test]
    fn round_trip_gives_back_header_and_rows() {
        let h = header();
        let bytes = saved(&h);
        assert_eq!(Some(bytes.len() as u64), h.file_len());
        let mut r = KlBaseReader::new(&bytes[..], "mem").expect("readable");
        assert_eq!(r.header(), &h);
        r.check_chunks(&h.chunks).expect("same chunks");
        for c in 0..h.chunks.len() {
            assert_eq!(r.read_chunk().expect("chunk"), chunk_rows(&h, c));
        }
        assert!(r.read_chunk().is_err(), "no chunk past the last");
    }

    #[test]
    fn mismatched_reuse_is_refused_with_the_reason() {
        let h = header();
        let bytes = saved(&h);
        let r = KlBaseReader::new(&bytes[..], "base.kl").expect("readable");
        let other_ctx = ScoredChunks::from_tokens(h.chunks.tokens().to_vec(), 16).expect("chunks");
        let e = r.check_chunks(&other_ctx).expect_err("context differs").to_string();
        assert!(e.contains("base.kl") && e.contains("context of 32"), "{e}");
        let mut tokens = h.chunks.tokens().to_vec();
        tokens[40] += 1;
        let e = r.check_chunks(&ScoredChunks::from_tokens(tokens, 32).expect("chunks")).expect_err("tokens differ");
        assert!(e.to_string().contains("differ at token 40"), "{e}");
        let mut more = h.chunks.tokens().to_vec();
        more.extend_from_slice(&h.chunks.tokens()[..32]);
        let e = r.check_chunks(&ScoredChunks::from_tokens(more, 32).expect("chunks")).expect_err("too many chunks");
        assert!(e.to_string().contains("holds 2 chunks"), "{e}");
        // Fewer chunks than saved is a prefix: allowed.
        let mut first = h.chunks.clone();
        first.truncate(1);
        r.check_chunks(&first).expect("first chunk only");
    }

    #[test]
    fn damaged_files_are_refused_without_panicking() {
        let bytes = saved(&header());
        let err = |b: &[u8]| KlBaseReader::new(b, "x").err().map(|e| e.to_string());
        assert!(err(b"GGUF\x03\0\0\0").expect("not a base").contains("signature"));
        assert!(err(&bytes[..20]).expect("short").contains("truncated"));
        let mut v = bytes.clone();
        v[8] = 9; // version
        assert!(err(&v).expect("version").contains("version 9"));
        let mut v = bytes.clone();
        v[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // vocab
        assert!(err(&v).expect("vocab").contains("vocabulary"));
        let mut v = bytes.clone();
        v[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // chunks
        assert!(err(&v).is_some());
        // Every prefix fails cleanly, in the header or when reading the chunks.
        for cut in (0..bytes.len()).step_by(97) {
            if let Ok(mut r) = KlBaseReader::new(&bytes[..cut], "x") {
                assert!((0..2).map(|_| r.read_chunk()).any(|c| c.is_err()), "cut at {cut}");
            }
        }
    }

    #[test]
    fn open_checks_the_file_length() {
        let dir = std::env::temp_dir().join(format!("tessera-kl-base-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("base.kl");
        let bytes = saved(&header());
        std::fs::write(&path, &bytes).expect("write");
        KlBaseReader::open(&path).expect("whole file");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        let e = KlBaseReader::open(&path).err().expect("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = KlBaseReader::open(&dir.join("missing.kl")).err().expect("missing").to_string();
        assert!(e.contains("missing.kl"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_writer_counts_its_chunks() {
        let h = header();
        let mut w = KlBaseWriter::new(Vec::new(), &h).expect("header");
        w.write_chunk(&chunk_rows(&h, 0)).expect("chunk");
        assert!(w.finish().is_err(), "one chunk is missing");
        w.write_chunk(&chunk_rows(&h, 1)).expect("chunk");
        assert!(w.write_chunk(&chunk_rows(&h, 1)).is_err(), "one too many");
        let wrong = LogProbRows::quantize(&[0.0; 3], 3, &[0]).expect("rows");
        assert!(KlBaseWriter::new(Vec::new(), &h).expect("header").write_chunk(&wrong).is_err());
    }
}
