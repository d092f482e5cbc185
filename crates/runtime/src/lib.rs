//! Loads a model onto a backend, owns the KV cache, samples, and runs generation.
