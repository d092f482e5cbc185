// Store and StoreRows: rows of F32 `src` into an F32 or F16 destination (DST_F16 is set when
// the kernel is built). For F16 one thread owns one 32-bit word of the destination, so rows
// that share a word never race.
// params: 0 N (rows), 1 D, 2 dst byte offset, 3 first row (Store), 4 src offset,
// 5 slots offset, 6 rows of dst, 7 slotted (0: Store, 1: StoreRows), 15 node.

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> slots: array<i32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

const DST_F16: bool = DST_F16_VALUE;

// The destination row of source row n, or -1 when its slot is out of range or repeated.
fn dst_row(n: u32) -> i32 {
    if (pu(7u) == 0u) {
        return i32(pu(3u) + n);
    }
    let s = slots[pu(5u) + n];
    if (s < 0 || u32(s) >= pu(6u)) {
        return -1;
    }
    for (var m = 0u; m < n; m++) {
        if (slots[pu(5u) + m] == s) {
            return -1;
        }
    }
    return s;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dim = pu(1u);
    let t = group_index(wid, nwg) * 256u + lid;
    if (!DST_F16) {
        if (t >= pu(0u) * dim) {
            return;
        }
        let n = t / dim;
        let row = dst_row(n);
        if (row < 0) {
            if (t % dim == 0u) {
                report_error(4u);
            }
            return;
        }
        dst[pu(2u) / 4u + u32(row) * dim + t % dim] = bitcast<u32>(src[pu(4u) + t]);
        return;
    }
    if (pu(7u) == 0u) {
        // Store into F16: thread t owns word w0 + t of the destination's written byte range.
        let begin = pu(2u) + 2u * pu(3u) * dim;
        let end = begin + 2u * pu(0u) * dim;
        let word = begin / 4u + t;
        if (word * 4u >= end) {
            return;
        }
        var bits = dst[word];
        for (var half = 0u; half < 2u; half++) {
            let byte = word * 4u + 2u * half;
            if (byte >= begin && byte < end) {
                let e = (byte - begin) / 2u;
                let h = f32_to_f16(src[pu(4u) + e]);
                bits = (bits & ~(0xffffu << (16u * half))) | (h << (16u * half));
            }
        }
        dst[word] = bits;
        return;
    }
    // StoreRows into F16 (D even and the offset 4-aligned, so a row is whole words): one thread
    // per word of a source row.
    let words = dim / 2u;
    if (t >= pu(0u) * words) {
        return;
    }
    let n = t / words;
    let i = t % words;
    let row = dst_row(n);
    if (row < 0) {
        if (i == 0u) {
            report_error(4u);
        }
        return;
    }
    let sb = pu(4u) + n * dim + 2u * i;
    let lo = f32_to_f16(src[sb]);
    let hi = f32_to_f16(src[sb + 1u]);
    dst[pu(2u) / 4u + u32(row) * words + i] = lo | (hi << 16u);
}
