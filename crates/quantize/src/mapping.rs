//! The mappings AWQ and W8A8 smoothing balance, as llm-compressor names them: the weights that
//! read one input site, and the tensor producing that input (a norm, or a projection whose
//! output rows are the inputs), with the grouped-query bookkeeping for V → O.

use std::collections::BTreeMap;

use crate::calib::{Calibration, InputStats, Site};
use crate::QuantizeError;

/// A smoothing mapping: the weights reading one input site, and the tensor producing it.
pub(crate) struct Mapping {
    pub site: Site,
    /// The tensor the scales fold into: a norm, or a projection whose rows are the inputs.
    pub smooth: &'static str,
    pub is_norm: bool,
    pub balance: &'static [&'static str],
}

/// norm → Q/K/V, V → O, norm → gate/up, up → down, as llm-compressor orders them.
pub(crate) const MAPPINGS: [Mapping; 4] = [
    Mapping {
        site: Site::AttnIn,
        smooth: "attn_norm.weight",
        is_norm: true,
        balance: &["attn_q.weight", "attn_k.weight", "attn_v.weight"],
    },
    Mapping { site: Site::AttnOut, smooth: "attn_v.weight", is_norm: false, balance: &["attn_output.weight"] },
    Mapping {
        site: Site::FfnIn,
        smooth: "ffn_norm.weight",
        is_norm: true,
        balance: &["ffn_gate.weight", "ffn_up.weight"],
    },
    Mapping { site: Site::FfnDown, smooth: "ffn_up.weight", is_norm: false, balance: &["ffn_down.weight"] },
];

impl Mapping {
    /// The site's statistics and the balance weights' names, when the layer has them all (and
    /// the calibration recorded the site).
    pub fn find<'s>(
        &self,
        layer: usize,
        values: &BTreeMap<String, Vec<f32>>,
        stats: &'s Calibration,
    ) -> Result<Option<(&'s InputStats, Vec<String>)>, QuantizeError> {
        let Some(st) = stats.get(&(layer, self.site)) else { return Ok(None) };
        let names: Vec<String> = self.balance.iter().map(|b| format!("blk.{layer}.{b}")).collect();
        if names.iter().any(|n| !values.contains_key(n))
            || !values.contains_key(&format!("blk.{layer}.{}", self.smooth))
        {
            return Ok(None);
        }
        let cols = st.dim();
        for n in &names {
            if !values[n].len().is_multiple_of(cols) {
                return Err(QuantizeError::Invalid(format!(
                    "{n}: {} values are not rows of {cols} inputs",
                    values[n].len()
                )));
            }
        }
        Ok(Some((st, names)))
    }

    pub fn site_name(&self) -> &'static str {
        match self.site {
            Site::AttnIn => "q/k/v",
            Site::AttnOut => "o",
            Site::FfnIn => "gate/up",
            Site::FfnDown => "down",
        }
    }
}

/// O's input scales with every head of a grouped-query group given the largest of the group's
/// scales per position, so that one V row can carry them.
pub(crate) fn tie_heads(s: &[f32], ratio: usize, head_dim: usize) -> Vec<f32> {
    let group = ratio * head_dim;
    let mut out = s.to_vec();
    for (g, chunk) in s.chunks(group).enumerate() {
        for d in 0..head_dim {
            let m = (0..ratio).map(|h| chunk[h * head_dim + d]).fold(0f32, f32::max);
            for h in 0..ratio {
                out[g * group + h * head_dim + d] = m;
            }
        }
    }
    out
}

/// V's row scales from O's tied input scales: row `kv * head_dim + d` takes the scale of input
/// `d` of the first head of group `kv`.
pub(crate) fn kv_row_scales(s: &[f32], ratio: usize, head_dim: usize) -> Vec<f32> {
    (0..s.len() / ratio).map(|row| s[(row / head_dim) * ratio * head_dim + row % head_dim]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::awq;

    /// Grouped-query attention: four query heads share two KV heads. Tied O scales and the V
    /// row scales taken from them keep the attention output's projection unchanged.
    #[test]
    fn tied_head_scales_fold_into_shared_v_rows() {
        let (heads, kv, hd, dm) = (4, 2, 3, 5);
        let ratio = heads / kv;
        let mut rng = crate::linalg::tests::Rng(5);
        let (v, o, x) = (rng.vec(kv * hd * dm), rng.vec(dm * heads * hd), rng.vec(dm));
        // One token attending to itself: head h outputs V_{h / ratio} x.
        let attention = |v: &[f32], o: &[f32]| -> Vec<f32> {
            let vx: Vec<f32> = (0..kv * hd).map(|r| (0..dm).map(|c| v[r * dm + c] * x[c]).sum()).collect();
            let heads_out: Vec<f32> = (0..heads * hd).map(|i| vx[(i / hd / ratio) * hd + i % hd]).collect();
            (0..dm).map(|r| (0..heads * hd).map(|c| o[r * heads * hd + c] * heads_out[c]).sum()).collect()
        };
        let before = attention(&v, &o);
        let s = tie_heads(&(0..heads * hd).map(|i| 0.5 + (i * 7 % 5) as f32).collect::<Vec<_>>(), ratio, hd);
        assert_eq!(s[0], s[hd], "heads of one group share their scales");
        let (mut v2, mut o2) = (v.clone(), o.clone());
        awq::divide_rows(&mut v2, dm, &kv_row_scales(&s, ratio, hd));
        awq::scale_columns(&mut o2, heads * hd, &s);
        for (a, b) in attention(&v2, &o2).iter().zip(&before) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
