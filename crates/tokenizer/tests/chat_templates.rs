//! Chat templates must render exactly as Hugging Face transformers renders them (Python jinja2
//! with its settings); the expected strings come from scripts/fixtures/tokenizer.

mod common;

use serde_json::Value;
use tessera_formats::ModelSource;
use tessera_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

fn source(name: &str) -> String {
    let path = common::fixtures().join(format!("{name}.jinja"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn smollm2_and_gemma3_templates_render_like_jinja2() {
    let cases = common::read_json(common::fixtures().join("chat_templates.json"));
    let cases = cases.as_array().expect("a list of renders");
    for case in cases {
        let name = case["template"].as_str().expect("template name");
        let template =
            ChatTemplate::new(&source(name), case["bos_token"].as_str().unwrap(), case["eos_token"].as_str().unwrap())
                .expect("template compiles");
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).expect("messages");
        let result = template.render(&messages, case["add_generation_prompt"].as_bool().unwrap());
        match (&case["expected"], result) {
            (Value::String(want), Ok(got)) => assert_eq!(&got, want, "{name} {messages:?}"),
            (Value::Null, Err(e)) => {
                let want = case["error"].as_str().unwrap();
                assert!(e.to_string().contains(want), "{name}: error {e} should mention {want:?}");
            }
            (want, got) => panic!("{name} {messages:?}: want {want}, got {got:?}"),
        }
    }
    assert!(cases.len() >= 20);
}

#[test]
fn smollm2_gguf_carries_its_template() {
    let Some(path) = common::model("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let tok = Tokenizer::from_source(&ModelSource::open(&path).unwrap()).unwrap();
    assert_eq!(tok.chat_template_source(), Some(source("smollm2").as_str()));
    let prompt = tok.chat_template().unwrap().unwrap().render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The rendered prompt tokenizes with its markers as special tokens.
    let ids = tok.encode(&prompt, tok.add_bos_by_default(), true);
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&id| tok.is_end_of_generation(id)).count(), 2);
}

#[test]
fn gemma3_base_gguf_has_no_template() {
    let Some(path) = common::model("gemma-3-270m-Q4_K_M.gguf") else { return };
    let tok = Tokenizer::from_source(&ModelSource::open(&path).unwrap()).unwrap();
    assert!(tok.chat_template().unwrap().is_none());
}
