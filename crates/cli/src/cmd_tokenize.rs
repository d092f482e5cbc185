//! `tessera tokenize`: token ids of a text, as a JSON array.

use anyhow::{Context, Result};
use clap::Args;
use tessera_formats::ModelSource;
use tessera_tokenizer::Tokenizer;

use crate::model_store;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model: a .gguf file, a Hugging Face directory, or a short name.
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    pub model: String,
    /// Text to tokenize.
    pub text: String,
    /// Add the beginning-of-sequence token.
    #[arg(long)]
    pub bos: bool,
    /// Treat special-token text (like `<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = model_store::resolve(&args.model, false)?;
    let source = ModelSource::open(&path)?;
    let tokenizer =
        Tokenizer::from_source(&source).with_context(|| format!("reading the tokenizer of {}", path.display()))?;
    let ids = tokenizer.encode(&args.text, args.bos, !args.no_parse_special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
