//! GetRows (dequantizing gather) and Store (scatter into a buffer, converting to its type).

use half::f16;
use rayon::prelude::*;
use tessera_core::DType;

/// Rows `ids` of a `[rows, cols]` table stored as `dtype`, as f32.
pub(crate) fn get_rows(table: &[u8], dtype: DType, rows: usize, cols: usize, ids: &[i32]) -> Result<Vec<f32>, String> {
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= rows) {
        return Err(format!("row id {bad} is outside 0..{rows}"));
    }
    let mut out = vec![0f32; ids.len() * cols];
    if cols == 0 {
        return Ok(out);
    }
    let row_bytes = dtype.bytes_for(cols).map_err(|e| e.to_string())?;
    out.par_chunks_mut(cols).zip(ids.par_iter()).with_min_len(4).try_for_each(|(o, &id)| {
        let at = id as usize * row_bytes;
        let src = table.get(at..at + row_bytes).ok_or("table is shorter than its shape")?;
        tessera_quant::dequantize(dtype, src, o).map_err(|e| e.to_string())
    })?;
    Ok(out)
}

/// Writes `src` (whole rows of `cols`) into `dst`, a `[_, cols]` tensor of `dtype` (F32 or F16),
/// from row `row` on.
pub(crate) fn store(src: &[f32], dst: &mut [u8], dtype: DType, row: usize, cols: usize) -> Result<(), String> {
    let size = match dtype {
        DType::F32 => 4,
        DType::F16 => 2,
        other => return Err(format!("cannot store into {other}")),
    };
    let start = row * cols * size;
    let out = dst.get_mut(start..start + src.len() * size).ok_or("rows do not fit the destination")?;
    if dtype == DType::F32 {
        for (o, v) in out.chunks_exact_mut(4).zip(src) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    } else {
        for (o, v) in out.chunks_exact_mut(2).zip(src) {
            o.copy_from_slice(&f16::from_f32_const(*v).to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_and_rejects_bad_ids() {
        let table: Vec<u8> = [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(get_rows(&table, DType::F32, 2, 2, &[1, 0, 1]).unwrap(), vec![3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(get_rows(&table, DType::F32, 2, 2, &[2]).is_err());
        assert!(get_rows(&table, DType::F32, 2, 2, &[-1]).is_err());
    }

    #[test]
    fn stores_with_conversion() {
        let mut dst = vec![0u8; 3 * 2 * 2];
        store(&[1.5, -2.0], &mut dst, DType::F16, 1, 2).unwrap();
        assert_eq!(f16::from_le_bytes([dst[4], dst[5]]).to_f32(), 1.5);
        assert_eq!(f16::from_le_bytes([dst[6], dst[7]]).to_f32(), -2.0);
        assert!(store(&[1.0, 2.0], &mut dst, DType::F16, 3, 2).is_err());
    }
}
