//! The contract beyond op numerics: buffers, bounds, unknown ids, and bad graph input, which
//! must come back as errors, never as panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tessera_backend::{Backend, BufferId, GraphBuilder, HostBytes, TensorRef};
use tessera_core::DType;

use crate::cases::attention::encode;
use crate::cases::rng;
use crate::data;
use crate::harness::{graph_err, Case};
use crate::report::ConformanceReport;

/// Runs one named check, turning an `Err` or a panic into a failure.
fn check(report: &mut ConformanceReport, name: &str, f: impl FnOnce() -> Result<(), String>) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            report.record("contract", 0.0, 0.0);
            report.passed += 1;
        }
        Ok(Err(e)) => report.fail_contract(name, e),
        Err(_) => report.fail_contract(name, "the backend panicked"),
    }
}

fn expect_err<T, E>(r: Result<T, E>, what: &str) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what} succeeded but must fail")),
        Err(_) => Ok(()),
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what} failed: {e}"))
}

/// Buffers: zero-filled alloc, round trips, bounds, unknown and freed ids, map_host.
pub fn check_buffers(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let b = backend.as_ref();
    check(report, "info names the backend", || {
        let info = b.info();
        if info.backend.is_empty() || info.name.is_empty() {
            return Err("empty backend or device name".into());
        }
        Ok(())
    });
    check(report, "alloc is zero-filled", || {
        let id = ok(b.alloc(1000), "alloc")?;
        let mut out = vec![1u8; 1000];
        let r = b.download(id, 0, &mut out);
        b.free(id);
        ok(r, "download")?;
        if out.iter().any(|&x| x != 0) {
            return Err("a fresh buffer is not zero-filled".into());
        }
        Ok(())
    });
    check(report, "upload and download round trip", || {
        let mut r = rng("round trip");
        let data: Vec<u8> = data::i32_bytes(&(0..25).map(|_| rand::Rng::gen(&mut r)).collect::<Vec<i32>>());
        let id = ok(b.alloc(256), "alloc")?;
        let result = (|| {
            ok(b.upload(id, 17, &data), "upload")?;
            let mut out = vec![0u8; 256];
            ok(b.download(id, 0, &mut out), "download")?;
            let mut want = vec![0u8; 256];
            want[17..17 + data.len()].copy_from_slice(&data);
            if out != want {
                return Err("downloaded bytes differ from the uploaded ones".into());
            }
            let mut part = vec![0u8; 10];
            ok(b.download(id, 20, &mut part), "partial download")?;
            if part[..] != want[20..30] {
                return Err("a partial download at an offset differs".into());
            }
            Ok(())
        })();
        b.free(id);
        result
    });
    check(report, "alloc_with round trip", || {
        let data: Vec<u8> = (0..=255).collect();
        let id = ok(b.alloc_with(&data), "alloc_with")?;
        let mut out = vec![0u8; 256];
        let r = b.download(id, 0, &mut out);
        b.free(id);
        ok(r, "download")?;
        if out != data {
            return Err("alloc_with did not keep the data".into());
        }
        Ok(())
    });
    check(report, "out-of-bounds access is an error", || {
        let id = ok(b.alloc(64), "alloc")?;
        let mut out = vec![0u8; 8];
        let checks = [
            expect_err(b.upload(id, 60, &[0u8; 8]), "upload past the end"),
            expect_err(b.download(id, 57, &mut out), "download past the end"),
            expect_err(b.upload(id, usize::MAX, &[0u8; 2]), "upload at offset usize::MAX"),
            expect_err(b.download(id, usize::MAX - 3, &mut out), "download at offset usize::MAX - 3"),
        ];
        b.free(id);
        checks.into_iter().collect()
    });
    check(report, "unknown and freed buffers are errors", || {
        let mut out = [0u8; 4];
        expect_err(b.download(BufferId(u64::MAX - 11), 0, &mut out), "download from an unknown buffer")?;
        expect_err(b.upload(BufferId(u64::MAX - 11), 0, &[1]), "upload to an unknown buffer")?;
        let id = ok(b.alloc(16), "alloc")?;
        b.free(id);
        expect_err(b.download(id, 0, &mut out), "download from a freed buffer")?;
        b.free(id);
        b.free(BufferId(u64::MAX - 11));
        Ok(())
    });
    check(report, "map_host reads the host bytes", || {
        let bytes: Vec<u8> = (0..100).map(|i| (i * 7) as u8).collect();
        let host: HostBytes = Arc::new(bytes.clone());
        let Some(mapped) = b.map_host(host) else { return Ok(()) };
        let id = ok(mapped, "map_host")?;
        let mut out = vec![0u8; 50];
        let r = b.download(id, 25, &mut out);
        b.free(id);
        ok(r, "download from a mapped buffer")?;
        if out[..] != bytes[25..75] {
            return Err("a mapped buffer does not read the host bytes".into());
        }
        Ok(())
    });
}

/// Graphs with bad input: each must fail with an error.
pub fn check_bad_input(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    check(report, "a leaf in an unknown buffer is an error", || {
        let mut g = GraphBuilder::new();
        let x =
            g.leaf(TensorRef { buffer: BufferId(u64::MAX - 5), offset: 0 }, DType::F32, [1, 32]).map_err(graph_err)?;
        g.scale(x, 2.0).map_err(graph_err)?;
        expect_err(backend.execute(&g.finish()), "execute")
    });
    check(report, "a leaf past the end of its buffer is an error", || {
        let id = ok(backend.alloc(64), "alloc")?;
        let mut g = GraphBuilder::new();
        let x = g.leaf(TensorRef { buffer: id, offset: 32 }, DType::F32, [2, 8]).map_err(graph_err)?;
        let out = g.leaf(TensorRef { buffer: id, offset: 0 }, DType::F32, [1, 8]).map_err(graph_err)?;
        let s = g.slice_rows(x, 0, 1).map_err(graph_err)?;
        g.store(s, out, 0).map_err(graph_err)?;
        let r = backend.execute(&g.finish());
        backend.free(id);
        expect_err(r, "execute")
    });

    for (label, bad) in [("equal to the table size", 5), ("negative", -1)] {
        let name = format!("get_rows with an id {label} is an error");
        Case::new(backend, "bad input", name, 0.0).check_error(report, |c| {
            let t = c.f32(&[5, 32], &[0.5; 160])?;
            let ids = c.ids(&[0, bad])?;
            let y = c.g.get_rows(t, ids).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }
    for (label, bad) in [("equal to the cache rows", 8), ("negative", -3)] {
        let name = format!("attention at a position {label} is an error");
        Case::new(backend, "bad input", name, 0.0).check_error(report, |c| {
            let q = c.f32(&[2, 64], &[0.1; 128])?;
            let k = c.leaf(DType::F16, &[8, 32], &encode(DType::F16, &[0.2; 256]))?;
            let v = c.leaf(DType::F16, &[8, 32], &encode(DType::F16, &[0.3; 256]))?;
            let pos = c.ids(&[3, bad])?;
            let y = c.g.attention(q, k, v, pos, 2, 1, 32, 0.2, None).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }

    for (label, slots) in [("equal to the rows", [2, 8]), ("negative", [-1, 0]), ("repeated", [5, 5])] {
        for dst in [DType::F32, DType::F16] {
            let name = format!("store_rows into {dst} with a slot {label} is an error");
            Case::new(backend, "bad input", name, 0.0).check_error(report, |c| {
                let src = c.f32(&[2, 32], &[0.5; 64])?;
                let d = c.destination(dst, &[8, 32])?;
                let slots = c.ids(&slots)?;
                let y = c.g.store_rows(src, d, slots).map_err(graph_err)?;
                c.subject(y);
                Ok(())
            });
        }
    }
    // A cache of 4 blocks of 4 rows, tables of 3 blocks; the second row is the bad one.
    for (label, pos, table, window) in [
        ("a needed table entry equal to the cache blocks", 9, [0, 1, 4], None),
        ("a needed negative table entry", 9, [0, -1, 2], Some(6)),
        ("a position past its table", 12, [0, 1, 2], None),
        ("a negative position", -1, [0, 1, 2], None),
    ] {
        let name = format!("paged_attention with {label} is an error");
        Case::new(backend, "bad input", name, 0.0).check_error(report, |c| {
            let q = c.f32(&[2, 64], &[0.1; 128])?;
            let k = c.leaf(DType::F16, &[16, 32], &encode(DType::F16, &[0.2; 512]))?;
            let v = c.leaf(DType::F16, &[16, 32], &encode(DType::F16, &[0.3; 512]))?;
            let pos = c.ids(&[3, pos])?;
            let tables = [[3, 2, 1], table].concat();
            let tables = c.leaf(DType::I32, &[2, 3], &data::i32_bytes(&tables))?;
            let y = c.g.paged_attention(q, k, v, pos, tables, 2, 1, 32, 0.2, window, 4).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }
}
