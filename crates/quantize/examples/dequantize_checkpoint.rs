//! Writes the weights of a quantized checkpoint as Tessera reads them (each quantized tensor
//! dequantized by `tessera-quant` and multiplied by its companion `.scale`) into a safetensors
//! file of F32 tensors under their GGUF names, for `scripts/check_compressed_tensors.py
//! --tessera-dump` to compare with compressed-tensors' own decompression.
//!
//! ```text
//! cargo run -p tessera-quantize --example dequantize_checkpoint -- MODEL_DIR OUT.safetensors
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tessera_core::DType;
use tessera_formats::ModelSource;

fn run(model: &Path, out: &Path) -> Result<usize, String> {
    let source = ModelSource::open(model).map_err(|e| e.to_string())?;
    let mut dumped: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let quantized = |d: DType| !matches!(d, DType::F32 | DType::F16 | DType::BF16);
    for t in source.tensors.iter().filter(|t| quantized(t.dtype)) {
        let n = t.shape.checked_count().map_err(|e| format!("{}: {e}", t.name))?;
        let mut values = vec![0f32; n];
        tessera_quant::dequantize(t.dtype, t.bytes.as_ref(), &mut values).map_err(|e| format!("{}: {e}", t.name))?;
        let scale_name = format!("{}.scale", t.name.trim_end_matches(".weight"));
        if let Some(s) = source.tensor(&scale_name) {
            let scale = tessera_quant::dequantize_to_vec(s.dtype, s.bytes.as_ref())
                .map_err(|e| format!("{scale_name}: {e}"))?;
            let cols = t.shape.cols().max(1);
            for (r, row) in values.chunks_exact_mut(cols).enumerate() {
                let f = if scale.len() == 1 { scale[0] } else { scale[r] };
                row.iter_mut().for_each(|v| *v *= f);
            }
        }
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        dumped.insert(t.name.clone(), (t.shape.dims().to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = dumped
        .iter()
        .map(|(name, (shape, bytes))| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize_to_file(views, &None, out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(dumped.len())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, out] = args.as_slice() else {
        eprintln!("usage: dequantize_checkpoint MODEL_DIR OUT.safetensors");
        return ExitCode::from(2);
    };
    match run(Path::new(model), Path::new(out)) {
        Ok(n) => {
            println!("wrote {n} tensors to {out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
