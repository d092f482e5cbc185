//! Tokenizers built from GGUF metadata or tokenizer.json, and chat templates (minijinja).
