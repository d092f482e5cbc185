//! Feeds arbitrary bytes to the GGUF reader through a real file, as `ModelSource::open` sees
//! one: it must return an error or a model, never panic, hang or exhaust memory.
//!
//! Run with `cargo +nightly fuzz run gguf_open` from this directory.

#![no_main]

use std::io::Write;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tessera_formats::ModelSource;

fn scratch_path() -> PathBuf {
    std::env::temp_dir().join(format!("tessera-fuzz-gguf-{}.gguf", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(data));
    if written.is_err() {
        return;
    }
    if let Ok(model) = ModelSource::open(&path) {
        // Touch every tensor's bytes: ranges the reader accepted must lie inside the file.
        let total: usize = model.tensors.iter().map(|t| t.bytes.as_ref().len()).sum();
        std::hint::black_box(total);
    }
    let _ = std::fs::remove_file(&path);
});
