//! GetRows (dequantizing gather), Store and StoreRows (writes into a buffer, converting to its
//! type: a run of rows, or rows at given slots).

use half::f16;
use rayon::prelude::*;
use tessera_core::DType;

/// Rows `ids` of a `[rows, cols]` table stored as `dtype`, as f32.
pub(crate) fn get_rows(table: &[u8], dtype: DType, rows: usize, cols: usize, ids: &[i32]) -> Result<Vec<f32>, String> {
    check_ids(ids, rows)?;
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

/// Every id names one of `rows` rows.
pub(crate) fn check_ids(ids: &[i32], rows: usize) -> Result<(), String> {
    match ids.iter().find(|&&id| id < 0 || id as usize >= rows) {
        Some(bad) => Err(format!("row id {bad} is outside 0..{rows}")),
        None => Ok(()),
    }
}

/// Bytes per element of a store destination.
fn element_size(dtype: DType) -> Result<usize, String> {
    match dtype {
        DType::F32 => Ok(4),
        DType::F16 => Ok(2),
        other => Err(format!("cannot store into {other}")),
    }
}

/// Converts `src` into `out`, values of `dtype` (F32 or F16).
fn convert(src: &[f32], out: &mut [u8], dtype: DType) {
    if dtype == DType::F32 {
        for (o, v) in out.chunks_exact_mut(4).zip(src) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    } else {
        for (o, v) in out.chunks_exact_mut(2).zip(src) {
            o.copy_from_slice(&f16::from_f32_const(*v).to_le_bytes());
        }
    }
}

/// Writes `src` (whole rows of `cols`) into `dst`, a `[_, cols]` tensor of `dtype` (F32 or F16),
/// from row `row` on.
pub(crate) fn store(src: &[f32], dst: &mut [u8], dtype: DType, row: usize, cols: usize) -> Result<(), String> {
    let size = element_size(dtype)?;
    let start = row * cols * size;
    let out = dst.get_mut(start..start + src.len() * size).ok_or("rows do not fit the destination")?;
    convert(src, out, dtype);
    Ok(())
}

/// Writes row `n` of `src` (rows of `cols`) into row `slots[n]` of `dst`, a `[_, cols]` tensor of
/// `dtype` (F32 or F16). Every slot is checked (inside `dst`, no two equal) before anything is
/// written, so bad slots leave `dst` as it was.
pub(crate) fn store_rows(src: &[f32], dst: &mut [u8], dtype: DType, slots: &[i32], cols: usize) -> Result<(), String> {
    let row_bytes = element_size(dtype)? * cols;
    let rows = dst.len().checked_div(row_bytes).unwrap_or(0);
    if let Some(bad) = slots.iter().find(|&&s| s < 0 || s as usize >= rows) {
        return Err(format!("slot {bad} is outside 0..{rows}"));
    }
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    if let Some(twice) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("slot {} is written twice", twice[0]));
    }
    if src.len() < slots.len() * cols {
        return Err(format!("{} values for {} rows of {cols}", src.len(), slots.len()));
    }
    if cols == 0 {
        return Ok(());
    }
    for (&slot, values) in slots.iter().zip(src.chunks_exact(cols)) {
        let start = slot as usize * row_bytes;
        convert(values, &mut dst[start..start + row_bytes], dtype);
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

    #[test]
    fn stores_rows_at_slots_and_rejects_bad_slots_untouched() {
        let f32s =
            |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
        let mut dst = vec![0u8; 4 * 2 * 4];
        store_rows(&[1.0, 2.0, 3.0, 4.0], &mut dst, DType::F32, &[3, 1], 2).unwrap();
        assert_eq!(f32s(&dst), vec![0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 1.0, 2.0]);
        let before = dst.clone();
        for bad in [&[0, 4][..], &[-1], &[2, 0, 2]] {
            let src = vec![9.0; bad.len() * 2];
            assert!(store_rows(&src, &mut dst, DType::F32, bad, 2).is_err(), "{bad:?}");
            assert_eq!(dst, before, "{bad:?} wrote before failing");
        }
        let mut half = vec![0u8; 3 * 2 * 2];
        store_rows(&[1.5, -2.0], &mut half, DType::F16, &[2], 2).unwrap();
        assert_eq!(f16::from_le_bytes([half[8], half[9]]).to_f32(), 1.5);
        assert_eq!(f16::from_le_bytes([half[10], half[11]]).to_f32(), -2.0);
    }
}
