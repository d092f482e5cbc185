//! Token ids must equal llama.cpp's for the same GGUF file and text. The expected ids come from
//! `llama-tokenize` (scripts/fixtures/tokenizer/make_tokenizer_fixtures.py).

mod common;

use tessera_formats::ModelSource;
use tessera_tokenizer::Tokenizer;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_model(fixture: &str) {
    let fx = common::read_json(common::fixtures().join(fixture));
    let Some(path) = common::model(fx["model"].as_str().expect("model file name")) else { return };
    let source = ModelSource::open(&path).expect("open model");
    let tok = Tokenizer::from_source(&source).expect("build tokenizer");

    let mut failures = Vec::new();
    let cases = fx["cases"].as_array().expect("cases");
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let checks = [
            ("default", tok.encode(text, tok.add_bos_by_default(), true), common::ids(&case["ids"])),
            ("no bos", tok.encode(text, false, true), common::ids(&case["ids_no_bos"])),
            ("no bos, no special", tok.encode(text, false, false), common::ids(&case["ids_no_bos_no_special"])),
        ];
        for (what, got, want) in checks {
            if got != want {
                failures.push(format!("{text:?} ({what}):\n  got  {got:?}\n  want {want:?}"));
            }
        }
        let want_ids = common::ids(&case["ids_no_bos"]);
        let joined: Vec<u8> = want_ids.iter().flat_map(|&id| tok.token_bytes(id).to_vec()).collect();
        let want_hex = case["pieces_hex"].as_str().expect("pieces_hex");
        if hex(&joined) != want_hex {
            failures.push(format!("{text:?} pieces: got {} want {want_hex}", hex(&joined)));
        }
        // Where llama.cpp's pieces give the text back, decoding must too.
        if joined == text.as_bytes() && tok.decode(&want_ids) != text {
            failures.push(format!("{text:?} does not round-trip: {:?}", tok.decode(&want_ids)));
        }
    }
    assert!(failures.is_empty(), "{} mismatches with llama.cpp:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{fixture}: {} texts x 3 variants equal to llama.cpp", cases.len());
}

#[test]
fn smollm2_bpe_matches_llama_cpp() {
    check_model("smollm2.ids.json");
}

#[test]
fn gemma3_spm_matches_llama_cpp() {
    check_model("gemma3-270m.ids.json");
}

/// A long mixed text (about 15k tokens) encodes in one piece and decodes back unchanged.
#[test]
fn long_text_round_trips() {
    let text = std::fs::read_to_string(common::fixtures().join("../text/ppl.txt")).expect("ppl.txt");
    let long = text.repeat(5);
    for file in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-Q4_K_M.gguf"] {
        let Some(path) = common::model(file) else { continue };
        let tok = Tokenizer::from_source(&ModelSource::open(&path).expect("open model")).expect("tokenizer");
        let ids = tok.encode(&long, false, true);
        assert!(ids.len() > 10_000, "{file}: {} tokens", ids.len());
        assert_eq!(tok.decode(&ids), long, "{file}");
    }
}
