//! Hugging Face tensor names to GGUF tensor names, as llama.cpp's `convert_hf_to_gguf.py` maps
//! them for the architectures Tessera runs.

use super::config::Arch;

/// Multimodal checkpoints keep the language model under a prefix; strip it so the text model's
/// names are the plain causal-LM ones.
fn strip_multimodal_prefix(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        return Some(format!("model.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("language_model.model.") {
        return Some(format!("model.{rest}"));
    }
    name.strip_prefix("language_model.").map(str::to_string)
}

/// The GGUF name of a Hugging Face tensor, or `None` for tensors the text model does not use
/// (vision towers, projectors, rotary caches), which the reader skips.
pub(crate) fn gguf_name(arch: Arch, hf_name: &str) -> Option<String> {
    let stripped = strip_multimodal_prefix(hf_name);
    let name = stripped.as_deref().unwrap_or(hf_name);
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let gguf = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        // Gemma 3 normalises after attention and before and after the FFN; the others have one
        // norm between attention and FFN, which GGUF calls the FFN norm.
        "post_attention_layernorm" if arch == Arch::Gemma3 => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_as_llama_cpp_does() {
        let cases = [
            (Arch::Llama, "model.embed_tokens.weight", Some("token_embd.weight")),
            (Arch::Llama, "model.norm.weight", Some("output_norm.weight")),
            (Arch::Llama, "lm_head.weight", Some("output.weight")),
            (Arch::Llama, "model.layers.3.input_layernorm.weight", Some("blk.3.attn_norm.weight")),
            (Arch::Llama, "model.layers.3.self_attn.o_proj.weight", Some("blk.3.attn_output.weight")),
            (Arch::Llama, "model.layers.3.post_attention_layernorm.weight", Some("blk.3.ffn_norm.weight")),
            (Arch::Qwen2, "model.layers.10.self_attn.k_proj.bias", Some("blk.10.attn_k.bias")),
            (Arch::Qwen3, "model.layers.0.self_attn.q_norm.weight", Some("blk.0.attn_q_norm.weight")),
            (Arch::Gemma3, "model.layers.1.post_attention_layernorm.weight", Some("blk.1.post_attention_norm.weight")),
            (Arch::Gemma3, "model.layers.1.pre_feedforward_layernorm.weight", Some("blk.1.ffn_norm.weight")),
            (Arch::Gemma3, "model.layers.1.post_feedforward_layernorm.weight", Some("blk.1.post_ffw_norm.weight")),
            (Arch::Gemma3, "language_model.model.layers.2.mlp.down_proj.weight", Some("blk.2.ffn_down.weight")),
            (Arch::Gemma3, "model.language_model.embed_tokens.weight", Some("token_embd.weight")),
            (Arch::Gemma3, "language_model.lm_head.weight", Some("output.weight")),
            (Arch::Gemma3, "vision_tower.vision_model.embeddings.patch_embedding.weight", None),
            (Arch::Llama, "model.layers.0.self_attn.rotary_emb.inv_freq", None),
            (Arch::Llama, "model.layers.x.mlp.up_proj.weight", None),
        ];
        for (arch, hf, gguf) in cases {
            assert_eq!(gguf_name(arch, hf).as_deref(), gguf, "{hf}");
        }
    }
}
