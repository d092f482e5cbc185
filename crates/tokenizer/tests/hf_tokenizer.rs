//! Tokenizers from a Hugging Face tokenizer.json must give the ids Hugging Face's own library
//! gives (fixtures made with the Python `tokenizers` package).

mod common;

use tessera_tokenizer::{StreamDecoder, Tokenizer};

fn load() -> Tokenizer {
    let dir = common::fixtures().join("hf");
    Tokenizer::from_json_file(&dir.join("tokenizer.json"), Some(&dir.join("tokenizer_config.json"))).unwrap()
}

#[test]
fn ids_and_text_match_hugging_face() {
    let tok = load();
    let cases = common::read_json(common::fixtures().join("hf/ids.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = common::ids(&case["ids"]);
        assert_eq!(tok.encode(text, false, true), ids, "{text:?}");
        assert_eq!(tok.encode(text, true, true), common::ids(&case["ids_with_bos"]), "{text:?}");
        assert_eq!(tok.decode(&ids), case["decoded"].as_str().unwrap(), "{text:?}");
        // Token by token, the stream gives the same text.
        let mut stream = StreamDecoder::new();
        let mut streamed: String = ids.iter().map(|&id| stream.push(tok.token_bytes(id))).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, text, "{text:?}");
    }
}

#[test]
fn special_tokens_bos_and_end_of_generation_come_from_the_config() {
    let tok = load();
    let im_start = tok.encode("<|im_start|>", false, true);
    assert_eq!(im_start.len(), 1);
    assert!(tok.encode("<|im_start|>", false, false).len() > 1, "parse_special=false keeps it as text");
    let bos = tok.bos_id().unwrap();
    assert_eq!(tok.token_bytes(bos), b"<|endoftext|>");
    assert!(tok.add_bos_by_default(), "the post-processor adds BOS");
    let eos = tok.eos_id().unwrap();
    assert_eq!(tok.token_bytes(eos), b"<|im_end|>");
    assert!(tok.is_end_of_generation(eos));
    assert!(!tok.is_end_of_generation(im_start[0]));
    assert_eq!(tok.vocab_size(), 400);
    let template = tok.chat_template().unwrap().unwrap();
    let prompt = template.render(&[tessera_tokenizer::ChatMessage::new("user", "hi")], false).unwrap();
    assert_eq!(prompt, "<|im_start|>user\nhi<|im_end|>\n");
}
