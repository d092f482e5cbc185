//! `tessera inspect`: what a model file holds.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use tessera_formats::{ModelSource, Origin, Value};
use tessera_tokenizer::Tokenizer;

use crate::model_store;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model: a .gguf file, a Hugging Face directory, or a short name.
    #[arg(default_value = "smollm2")]
    pub model: String,
    /// Also list every tensor.
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let path = model_store::resolve(&args.model, false)?;
    let source = ModelSource::open(&path)?;
    let m = &source.metadata;
    let format = match source.origin {
        Origin::Gguf { version } => format!("GGUF v{version}"),
        Origin::HuggingFace => "Hugging Face directory (safetensors)".to_string(),
    };
    println!("model:        {}", path.display());
    println!("format:       {format}");
    if let Ok(name) = m.str("general.name") {
        println!("name:         {name}");
    }
    let arch = m.architecture()?.to_string();
    println!("architecture: {arch}");
    for (label, key) in [
        ("layers", "block_count"),
        ("embedding", "embedding_length"),
        ("feed-forward", "feed_forward_length"),
        ("heads", "attention.head_count"),
        ("kv heads", "attention.head_count_kv"),
        ("head dim", "attention.key_length"),
        ("context", "context_length"),
        ("rope base", "rope.freq_base"),
        ("sliding win", "attention.sliding_window"),
    ] {
        if let Some(v) = m.get(&format!("{arch}.{key}")) {
            println!("{:<13} {}", format!("{label}:"), show(v));
        }
    }
    match Tokenizer::from_source(&source) {
        Ok(t) => {
            let id = |i: Option<u32>| i.map_or("none".to_string(), |i| i.to_string());
            println!("tokenizer:    {} tokens, bos {}, eos {}", t.vocab_size(), id(t.bos_id()), id(t.eos_id()));
            match t.chat_template_source() {
                Some(tpl) => println!(
                    "chat template: {} characters, starts {:?}",
                    tpl.len(),
                    tpl.chars().take(60).collect::<String>()
                ),
                None => println!("chat template: none"),
            }
        }
        Err(e) => println!("tokenizer:    unavailable ({e})"),
    }
    let mut by_type: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for t in &source.tensors {
        let e = by_type.entry(t.dtype.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.bytes.as_ref().len() as u64;
        e.2 += t.shape.count() as u64;
    }
    let total: u64 = by_type.values().map(|v| v.1).sum();
    let params: u64 = by_type.values().map(|v| v.2).sum();
    println!(
        "tensors:      {} ({:.1} M parameters, {:.1} MiB)",
        source.tensors.len(),
        params as f64 / 1e6,
        total as f64 / 1048576.0
    );
    for (dtype, (count, bytes, elems)) in &by_type {
        println!(
            "  {dtype:<6} {count:>5} tensors {:>10.2} MiB {:>6.2} bits/weight",
            *bytes as f64 / 1048576.0,
            *bytes as f64 * 8.0 / (*elems).max(1) as f64
        );
    }
    if args.tensors {
        for t in &source.tensors {
            println!("  {:<40} {:<6} {}", t.name, t.dtype.name(), t.shape);
        }
    }
    Ok(())
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{} values]", a.len()),
        other => other.as_f64().map_or_else(|| format!("{other:?}"), |f| format!("{f}")),
    }
}
