//! What the host computes around a translated model: its inputs before a run (leaf bytes, rotary
//! tables, attention masks, store rows, each checked as the contract requires) and the writes
//! its outputs make afterwards.

use tessera_backend::{BufferId, DType, Graph, NodeId, Op};

use crate::proto::data_type;
use crate::translate::{BufferReader, HostInput, OnnxInput};
use crate::OnnxError;

/// One input's data: little-endian bytes of `elem_type` values in `dims`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub elem_type: i32,
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The leaf a view or a chain of stores ultimately lives in, with the byte offset inside it.
pub fn leaf_storage(graph: &Graph, mut id: NodeId) -> Option<(NodeId, usize)> {
    let mut total = 0;
    loop {
        let (node, offset) = graph.storage_of(id)?;
        total += offset;
        match graph.node(node).op {
            Op::Leaf(_) => return Some((node, total)),
            _ => id = graph.node(node).inputs[1],
        }
    }
}

/// The buffer, byte offset and length of the bytes a leaf (or a view of one) reads.
pub fn leaf_span(graph: &Graph, id: NodeId) -> Result<(BufferId, usize, usize), OnnxError> {
    let node = graph.node(id);
    let err = |message: String| OnnxError::Leaf { node: id, message };
    let (leaf, offset) = leaf_storage(graph, id).ok_or_else(|| err("not stored in a buffer".into()))?;
    let Op::Leaf(tensor) = graph.node(leaf).op else { return Err(err("not a leaf".into())) };
    let len = node.dtype.bytes_for(node.shape.count()).map_err(|e| err(e.to_string()))?;
    Ok((tensor.buffer, tensor.offset + offset, len))
}

fn leaf_bytes(graph: &Graph, reader: &dyn BufferReader, id: NodeId) -> Result<Vec<u8>, OnnxError> {
    let (buffer, offset, len) = leaf_span(graph, id)?;
    reader.read(buffer, offset, len).map_err(|message| OnnxError::Leaf { node: id, message })
}

/// The I32 values of a leaf or a view of one.
pub fn read_i32(graph: &Graph, reader: &dyn BufferReader, id: NodeId) -> Result<Vec<i32>, OnnxError> {
    let bytes = leaf_bytes(graph, reader, id)?;
    Ok(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn invalid(graph: &Graph, node: NodeId, message: String) -> OnnxError {
    OnnxError::InvalidInput { node, op: graph.node(node).op.name(), message }
}

/// Computes the data of `input` for a run of `graph`.
pub fn fill(graph: &Graph, reader: &dyn BufferReader, input: &OnnxInput) -> Result<HostTensor, OnnxError> {
    let bytes = match &input.source {
        HostInput::Leaf { node } => leaf_bytes(graph, reader, *node)?,
        HostInput::RopeCos { pos, rot_dims, base, freq_scale }
        | HostInput::RopeSin { pos, rot_dims, base, freq_scale } => {
            let cos = matches!(input.source, HostInput::RopeCos { .. });
            let positions = read_i32(graph, reader, *pos)?;
            let table = rope_table(&positions, *rot_dims, *base, *freq_scale, cos);
            table.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        HostInput::Mask { pos, tables, rows, window, block_size, masked } => {
            let positions = read_i32(graph, reader, *pos)?;
            let tables = match tables {
                Some(t) => Some((read_i32(graph, reader, *t)?, graph.node(*t).shape.cols())),
                None => None,
            };
            let mask = attention_mask(graph, *pos, &positions, tables.as_ref(), *rows, *window, *block_size, *masked)?;
            mask.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        HostInput::AppendMask { pos, store, rows, window, masked } => {
            let positions = read_i32(graph, reader, *pos)?;
            let (start, new) = match graph.node(*store).op {
                Op::Store { row } => (row, graph.node(graph.node(*store).inputs[0]).shape.rows()),
                _ => return Err(invalid(graph, *store, "not a Store".into())),
            };
            let user = attention_user(graph, *pos);
            if let Some((n, &p)) = positions.iter().enumerate().find(|(_, &p)| p < 0 || p as usize >= *rows) {
                let message = format!("position {p} of row {n} is outside the cache of {rows} positions");
                return Err(invalid(graph, user, message));
            }
            let positions: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
            let mask = append_mask(&positions, start, new, *rows, *window, *masked);
            mask.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        HostInput::Rows { store } => store_rows(graph, reader, *store)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok(HostTensor { elem_type: input.elem_type, dims: input.dims.clone(), bytes })
}

/// Rotary cos or sin `[N, rot_dims / 2]`, the angles built as the CPU backend builds them.
pub fn rope_table(positions: &[i32], rot_dims: usize, base: f32, freq_scale: f32, cos: bool) -> Vec<f32> {
    let half = rot_dims / 2;
    let theta_scale = base.powf(-2.0 / rot_dims as f32);
    let mut out = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        let mut theta = p as f32;
        for _ in 0..half {
            let angle = freq_scale * theta;
            out.push(if cos { angle.cos() } else { angle.sin() });
            theta *= theta_scale;
        }
    }
    out
}

/// The additive mask `[N, rows]` of an `Attention` (no tables) or `PagedAttention` node whose
/// positions input is `pos_node`.
#[allow(clippy::too_many_arguments)]
pub fn attention_mask(
    graph: &Graph,
    pos_node: NodeId,
    positions: &[i32],
    tables: Option<&(Vec<i32>, usize)>,
    rows: usize,
    window: Option<usize>,
    block_size: usize,
    masked: f32,
) -> Result<Vec<f32>, OnnxError> {
    // Errors name the attention node reading these positions.
    let user = (pos_node..graph.len())
        .find(|&n| {
            matches!(graph.node(n).op, Op::Attention { .. } | Op::PagedAttention { .. })
                && graph.node(n).inputs[3] == pos_node
        })
        .unwrap_or(pos_node);
    let mut mask = vec![masked; positions.len() * rows];
    for (n, &p) in positions.iter().enumerate() {
        let limit = match tables {
            Some((_, blocks)) => blocks * block_size,
            None => rows,
        };
        if p < 0 || p as usize >= limit {
            return Err(invalid(
                graph,
                user,
                format!("position {p} of row {n} is outside the cache of {limit} positions"),
            ));
        }
        let p = p as usize;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let row = &mut mask[n * rows..(n + 1) * rows];
        for j in first..=p {
            let r = match tables {
                None => j,
                Some((t, blocks)) => {
                    let entry = t[n * blocks + j / block_size];
                    let r = (entry as i64) * block_size as i64 + (j % block_size) as i64;
                    if entry < 0 || r >= rows as i64 {
                        return Err(invalid(
                            graph,
                            user,
                            format!("block table entry {entry} of row {n} is outside the cache of {rows} rows"),
                        ));
                    }
                    r as usize
                }
            };
            row[r] = 0.0;
        }
    }
    Ok(mask)
}

/// The mask of [`HostInput::AppendMask`]: `[positions, rows + new]` over a cache of `rows` rows
/// followed by the `new` rows a step starting at position `start` writes.
pub fn append_mask(
    positions: &[usize],
    start: usize,
    new: usize,
    rows: usize,
    window: Option<usize>,
    masked: f32,
) -> Vec<f32> {
    let width = rows + new;
    let mut mask = vec![masked; positions.len() * width];
    for (n, &p) in positions.iter().enumerate() {
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let row = &mut mask[n * width..(n + 1) * width];
        for j in first..=p {
            if j < start {
                row[j] = 0.0;
            } else if j < start + new {
                row[rows + j - start] = 0.0;
            }
        }
    }
    mask
}

/// The attention node reading positions `pos_node`, which errors about them name.
fn attention_user(graph: &Graph, pos_node: NodeId) -> NodeId {
    (pos_node..graph.len())
        .find(|&n| {
            matches!(graph.node(n).op, Op::Attention { .. } | Op::PagedAttention { .. })
                && graph.node(n).inputs[3] == pos_node
        })
        .unwrap_or(pos_node)
}

/// The destination rows of a store, checked: `row..row + N` for `Store`, the slots for
/// `StoreRows` (inside the destination, distinct).
pub fn store_rows(graph: &Graph, reader: &dyn BufferReader, store: NodeId) -> Result<Vec<i64>, OnnxError> {
    let node = graph.node(store);
    let dst = graph.node(node.inputs[1]);
    let (capacity, width) = (dst.shape.rows(), dst.shape.cols());
    let n = graph.node(node.inputs[0]).shape.count() / width.max(1);
    match node.op {
        Op::Store { row } => Ok((row..row + n).map(|r| r as i64).collect()),
        Op::StoreRows => {
            let slots = read_i32(graph, reader, node.inputs[2])?;
            let mut seen = std::collections::HashSet::new();
            for &s in &slots {
                if s < 0 || s as usize >= capacity {
                    return Err(invalid(
                        graph,
                        store,
                        format!("slot {s} is outside the destination of {capacity} rows"),
                    ));
                }
                if !seen.insert(s) {
                    return Err(invalid(graph, store, format!("slot {s} is written twice")));
                }
            }
            Ok(slots.iter().map(|&s| s as i64).collect())
        }
        _ => Err(invalid(graph, store, "not a store".into())),
    }
}

/// Checks the ids of every `GetRows` against its table before a run.
pub fn check_ids(
    graph: &Graph,
    reader: &dyn BufferReader,
    checks: &[(NodeId, NodeId, usize)],
) -> Result<(), OnnxError> {
    for &(node, ids, rows) in checks {
        if let Some(&bad) = read_i32(graph, reader, ids)?.iter().find(|&&i| i < 0 || i as usize >= rows) {
            return Err(invalid(graph, node, format!("id {bad} is outside the table's {rows} rows")));
        }
    }
    Ok(())
}

/// One write a store makes: `bytes` into `buffer` at byte `offset`.
pub struct Write {
    pub buffer: BufferId,
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// The writes that `store` makes with its computed rows `src` (`[N, D]` f32), converted to the
/// destination's type.
pub fn store_writes(
    graph: &Graph,
    reader: &dyn BufferReader,
    store: NodeId,
    src: &[f32],
) -> Result<Vec<Write>, OnnxError> {
    let node = graph.node(store);
    let dst = graph.node(node.inputs[1]);
    let width = dst.shape.cols();
    let rows = store_rows(graph, reader, store)?;
    let (leaf, base) = leaf_storage(graph, node.inputs[1])
        .ok_or_else(|| OnnxError::Leaf { node: store, message: "destination is not a buffer".into() })?;
    let Op::Leaf(tensor) = graph.node(leaf).op else { unreachable!("leaf_storage ends at a leaf") };
    let row_bytes = dst.dtype.bytes_for(width).map_err(|e| OnnxError::Leaf { node: store, message: e.to_string() })?;
    let mut writes = Vec::with_capacity(rows.len());
    for (i, &r) in rows.iter().enumerate() {
        let values = &src[i * width..(i + 1) * width];
        let bytes = match dst.dtype {
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            other => return Err(invalid(graph, store, format!("cannot store into {other}"))),
        };
        writes.push(Write { buffer: tensor.buffer, offset: tensor.offset + base + r as usize * row_bytes, bytes });
    }
    Ok(writes)
}

/// Bytes per element of the ONNX types the translation uses.
pub fn elem_bytes(elem_type: i32) -> usize {
    match elem_type {
        data_type::INT64 => 8,
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::FLOAT16 | data_type::INT16 | data_type::UINT16 => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_mask_shows_the_past_before_the_step_and_the_step_causally() {
        // Cache of 4 rows, step of 2 tokens at positions 2 and 3 (rows 2 and 3 of the cache
        // are being replaced, so only rows 0 and 1 are visible from it).
        let m = append_mask(&[2, 3], 2, 2, 4, None, -1.0);
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, -1.0, -1.0,   0.0, -1.0,
            0.0, 0.0, -1.0, -1.0,   0.0, 0.0,
        ];
        assert_eq!(m, expected);
        // A window of 2: position 3 sees positions 2 and 3 only.
        let m = append_mask(&[3], 2, 2, 4, Some(2), -1.0);
        assert_eq!(m[..6], [-1.0, -1.0, -1.0, -1.0, 0.0, 0.0]);
    }

    #[test]
    fn rope_tables_build_the_angle_by_repeated_multiplication() {
        let cos = rope_table(&[0, 3], 4, 10000.0, 1.0, true);
        let sin = rope_table(&[0, 3], 4, 10000.0, 1.0, false);
        assert_eq!(cos[..2], [1.0, 1.0]);
        assert_eq!(sin[..2], [0.0, 0.0]);
        let theta1 = 3.0f32 * 10000f32.powf(-0.5);
        assert_eq!(cos[2..], [3f32.cos(), theta1.cos()]);
        assert_eq!(sin[2..], [3f32.sin(), theta1.sin()]);
    }

    struct Buffers(std::collections::HashMap<BufferId, Vec<u8>>);

    impl BufferReader for Buffers {
        fn read(&self, buffer: BufferId, offset: usize, len: usize) -> Result<Vec<u8>, String> {
            self.0
                .get(&buffer)
                .and_then(|b| b.get(offset..offset + len))
                .map(<[u8]>::to_vec)
                .ok_or("out of range".into())
        }
    }

    fn i32s(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn paged_masks_follow_block_tables_and_bad_entries_or_slots_are_errors() {
        use tessera_backend::{DType, GraphBuilder, TensorRef};
        let leaf = |g: &mut GraphBuilder, id: u64, dtype, dims: &[usize]| {
            g.leaf(TensorRef { buffer: BufferId(id), offset: 0 }, dtype, tessera_core::Shape::new(dims.to_vec()))
                .unwrap()
        };
        let build = |tables: &[i32], slots: &[i32]| {
            let mut g = GraphBuilder::new();
            let q = leaf(&mut g, 1, DType::F32, &[2, 4]);
            let pool = leaf(&mut g, 2, DType::F32, &[8, 4]);
            let pos = leaf(&mut g, 3, DType::I32, &[2]);
            let tab = leaf(&mut g, 4, DType::I32, &[2, 2]);
            let sl = leaf(&mut g, 5, DType::I32, &[2]);
            let k = g.store_rows(q, pool, sl).unwrap();
            g.paged_attention(q, k, k, pos, tab, 1, 1, 4, 1.0, None, 2).unwrap();
            let buffers = Buffers(
                [(3, i32s(&[0, 2])), (4, i32s(tables)), (5, i32s(slots))]
                    .into_iter()
                    .map(|(id, b)| (BufferId(id), b))
                    .collect(),
            );
            (g.finish(), buffers, pos, tab)
        };
        // Row 0 (position 0) lives in block 3; row 1 (position 2) in blocks 1 then 0.
        let (g, buffers, pos, tab) = build(&[3, 0, 1, 0], &[6, 0]);
        let tables = (read_i32(&g, &buffers, tab).unwrap(), 2);
        let m = attention_mask(&g, pos, &[0, 2], Some(&tables), 8, None, 2, -1.0).unwrap();
        let visible: Vec<Vec<usize>> =
            m.chunks(8).map(|r| r.iter().enumerate().filter(|(_, v)| **v == 0.0).map(|(i, _)| i).collect()).collect();
        assert_eq!(visible, [vec![6], vec![0, 2, 3]]);
        let err = attention_mask(&g, pos, &[0, 2], Some(&(vec![3, 0, 9, 0], 2)), 8, None, 2, -1.0).unwrap_err();
        assert!(err.to_string().contains("block table entry 9"), "{err}");
        let err = attention_mask(&g, pos, &[0, 4], Some(&tables), 8, None, 2, -1.0).unwrap_err();
        assert!(err.to_string().contains("position 4"), "{err}");
        let store = g.nodes().iter().position(|n| n.op == Op::StoreRows).unwrap();
        assert_eq!(store_rows(&g, &buffers, store).unwrap(), [6, 0]);
        for (slots, needle) in [([6, 6], "written twice"), ([8, 0], "slot 8")] {
            let (g, buffers, _, _) = build(&[3, 0, 1, 0], &slots);
            let err = store_rows(&g, &buffers, store).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
