// The step counter: one U32 incremented on the GPU. It is the last dispatch of a training step
// (the optimizer's step, src/optim.rs) and of an evaluation graph (the batch counter,
// Graph::data_tick), so a replayed plan advances with no host writes. Op: src/ops/counter.rs.

@group(0) @binding(1) var<storage, read_write> tick_c: array<u32>;

@compute @workgroup_size(1)
fn tick() {
    tick_c[0] = tick_c[0] + 1u;
}
