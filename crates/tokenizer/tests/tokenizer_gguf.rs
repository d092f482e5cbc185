//! A Hugging Face directory written from a GGUF model keeps its tokenizer as a tensor-less
//! `tokenizer.gguf`; the tokenizer built from that directory must be the GGUF model's own.

mod common;

use std::path::Path;

use tessera_formats::hf::TOKENIZER_GGUF;
use tessera_formats::{GgufWriter, ModelSource, Value};
use tessera_tokenizer::{ChatMessage, Tokenizer};

/// A safetensors file with one F32 tensor: enough weights for the directory to open.
fn write_tiny_safetensors(path: &Path) {
    let mut header = br#"{"model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(1f32.to_le_bytes());
    std::fs::write(path, file).unwrap();
}

#[test]
fn tokenizer_gguf_directory_tokenizes_as_the_gguf_model() {
    let Some(path) = common::model(tessera_testkit::SMOLLM2) else { return };
    let gguf = ModelSource::open(&path).expect("open SmolLM2");
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 30,
                     "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "vocab_size": 49152}"#;
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    write_tiny_safetensors(&dir.path().join("model.safetensors"));
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
    for (key, value) in gguf.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        w.add_metadata(key.clone(), value.clone()).unwrap();
    }
    w.write_file(&dir.path().join(TOKENIZER_GGUF)).unwrap();

    let hf = ModelSource::open(dir.path()).expect("open the directory");
    let want = Tokenizer::from_source(&gguf).expect("GGUF tokenizer");
    let got = Tokenizer::from_source(&hf).expect("tokenizer.gguf tokenizer");
    assert_eq!(got.vocab_size(), want.vocab_size());
    assert_eq!((got.bos_id(), got.eos_id()), (want.bos_id(), want.eos_id()));
    assert_eq!(got.add_bos_by_default(), want.add_bos_by_default());
    for text in ["Hello, world!", "  leading spaces and\ttabs\n", "naïve café 東京", "<|im_start|>user\nhi<|im_end|>"]
    {
        for (add_bos, special) in [(true, true), (false, false)] {
            let ids = want.encode(text, add_bos, special);
            assert_eq!(got.encode(text, add_bos, special), ids, "{text:?}");
            assert_eq!(got.decode(&ids), want.decode(&ids), "{text:?}");
        }
    }
    assert!(got.chat_template_source().is_some());
    assert_eq!(got.chat_template_source(), want.chat_template_source());
    let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "What is 2 + 2?")];
    let render = |t: &Tokenizer| t.chat_template().unwrap().expect("a template").render(&messages, true).unwrap();
    assert_eq!(render(&got), render(&want));
}
