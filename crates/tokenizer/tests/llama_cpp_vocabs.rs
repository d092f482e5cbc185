//! llama.cpp's own tokenizer test vectors: the vocabulary-only GGUF files in llama.cpp's
//! `models/` directory, each with `.inp` texts and `.out` expected ids. Runs when
//! `TESSERA_LLAMA_CPP_VOCABS` names that directory; otherwise it is skipped (the files are part of
//! llama.cpp's source tree, not of Tessera's test models).

mod common;

use std::path::Path;

use tessera_formats::ModelSource;
use tessera_tokenizer::{Tokenizer, TokenizerError};

/// `(text, expected ids)` pairs from a `.inp`/`.out` pair.
fn read_tests(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).expect("read .out");
    let texts = inp.split("\n__ggml_vocab_test__\n");
    let ids = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("token id")).collect());
    texts.map(str::to_string).zip(ids).collect()
}

#[test]
fn llama_cpp_vocab_test_vectors() {
    let Some(dir) = std::env::var_os("TESSERA_LLAMA_CPP_VOCABS") else {
        eprintln!("skipping: set TESSERA_LLAMA_CPP_VOCABS to llama.cpp's models/ directory");
        return;
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("read dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    let mut failures = Vec::new();
    for gguf in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")) {
        if !gguf.with_extension("gguf.out").is_file() {
            continue;
        }
        let name = gguf.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let source = ModelSource::open(gguf).expect("open vocab");
        let tok = match Tokenizer::from_source(&source) {
            Ok(t) => t,
            Err(e @ (TokenizerError::UnsupportedModel(_) | TokenizerError::UnsupportedPreTokenizer(_))) => {
                eprintln!("{name}: skipped ({e})");
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let tests = read_tests(gguf);
        let bad: Vec<_> = tests.iter().filter(|(text, want)| &tok.encode(text, false, false) != want).collect();
        eprintln!("{name}: {}/{} equal", tests.len() - bad.len(), tests.len());
        for (text, want) in bad {
            failures.push(format!("{name} {text:?}:\n  got  {:?}\n  want {want:?}", tok.encode(text, false, false)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
