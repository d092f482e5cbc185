//! Int8 weights with one scale per output row, chosen by GPTQ: the weight form of QDQ ONNX
//! exports (what NPU compilers take), calibrated on the model's own activations.
//!
//! Rounding each weight to nearest leaves the export's largest error (on SmolLM2 in a16w8, int8
//! weights alone cost more top-1 agreement than every 16-bit activation together); GPTQ spreads
//! each column's rounding error over the columns still to come, weighted by the inputs' second
//! moment, so the layer's output moves less.

use std::collections::BTreeMap;

use tessera_runtime::LoadedModel;

use crate::calib::{self, Site};
use crate::floats::FloatType;
use crate::gptq;
use crate::integer::Bits;
use crate::{Progress, QuantizeError};

/// Statistics held at once while calibrating, in bytes (each site's `d × d` f64 matrix).
const CALIBRATION_BUDGET: usize = 1 << 30;

/// A weight as int8 codes (row-major, as the weight) and one scale per row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowCodes {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
}

impl RowCodes {
    pub fn dequantize(&self) -> Vec<f32> {
        let cols = self.codes.len() / self.scales.len().max(1);
        self.codes
            .chunks_exact(cols.max(1))
            .zip(&self.scales)
            .flat_map(|(r, &s)| r.iter().map(move |&c| c as f32 * s))
            .collect()
    }
}

/// A matmul weight of a decoder layer: its name, input site and input width.
struct LayerWeight {
    name: String,
    site: Site,
    cols: usize,
}

/// GPTQ int8 codes of every decoder-layer matmul weight of `model` (loaded on the CPU backend),
/// by tensor name, calibrated on `text`. Other weights (embeddings, the output head) are not
/// in the map: their inputs are not recorded, and callers round them to nearest.
pub fn gptq_int8_rows(
    model: &LoadedModel,
    text: &str,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, RowCodes>, QuantizeError> {
    let mut by_layer: BTreeMap<usize, Vec<LayerWeight>> = BTreeMap::new();
    for name in model.weight_names() {
        let Some((layer, site)) = Site::of(name) else { continue };
        let Some(shape) = model.weight_shape(name) else { continue };
        if shape.rank() == 2 {
            by_layer.entry(layer).or_default().push(LayerWeight { name: name.to_string(), site, cols: shape.cols() });
        }
    }
    let sequences = calib::sequences(model, text)?;
    let mut out = BTreeMap::new();
    // As many layers at once as the budget holds statistics for: a d × d f64 matrix per site.
    let bytes_of = |_: usize, weights: &Vec<LayerWeight>| -> usize {
        let sites: BTreeMap<Site, usize> = weights.iter().map(|w| (w.site, w.cols)).collect();
        sites.values().map(|c| c * c * 8).sum()
    };
    for group in calib::windows(by_layer.into_iter().collect(), CALIBRATION_BUDGET, bytes_of) {
        let range = group[0].0..group[group.len() - 1].0 + 1;
        let stats = calib::collect(model, &sequences, range, &|_, _| true, progress)?;
        for (layer, weights) in group {
            let mut factors: BTreeMap<Site, gptq::Prepared> = BTreeMap::new();
            for LayerWeight { name, site, cols } in weights {
                let Some((dtype, shape, bytes)) = model.weight_data(&name)? else { continue };
                let values = tessera_quant::dequantize_to_vec(dtype, &bytes)?;
                let factor = match factors.entry(site) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let s = stats.get(&(layer, site)).ok_or_else(|| {
                            QuantizeError::Invalid(format!("{name}: the calibration run recorded no inputs for it"))
                        })?;
                        if s.dim() != cols {
                            return Err(QuantizeError::Invalid(format!(
                                "{name}: {cols} columns, but its inputs have {}",
                                s.dim()
                            )));
                        }
                        e.insert(gptq::prepare(&s.hessian(), s.dim(), s.count()))
                    }
                };
                let codes = if factor.report.fell_back_to_rtn {
                    progress.message(&format!("{name}: GPTQ could not factor its inputs; rounded to nearest"));
                    crate::integer::quantize_rtn(&values, shape.rows(), cols, cols, Bits(8), FloatType::F16)
                } else {
                    gptq::quantize(&values, shape.rows(), factor, cols, Bits(8), FloatType::F16)
                };
                progress.tensor_done(&name);
                out.insert(name, RowCodes { codes: codes.codes, scales: codes.scales });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_codes_dequantize_by_row() {
        let rc = RowCodes { codes: vec![1, -2, 3, 127, 0, -128], scales: vec![0.5, 2.0] };
        assert_eq!(rc.dequantize(), vec![0.5, -1.0, 1.5, 254.0, 0.0, -256.0]);
    }
}
