// Bad input found on the device (an id, position, slot or table entry out of range) is
// reported here and turned into an error after the graph runs: [0] the error kind, [1] the
// first node that found one.
@group(0) @binding(7) var<storage, read_write> err: array<atomic<u32>, 4>;

fn report_error(kind: u32) {
    atomicMax(&err[0], kind);
    atomicMin(&err[1], pu(15u));
}
