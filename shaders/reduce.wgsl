// Reductions over any set of axes. An output element o decomposes over the kept dims
// (kshape/kstride give its base offset in the input); the reduced elements decompose over
// rshape/rstride. One thread per output (serial) or one 256-thread workgroup per output
// (reducing through the wg_reduce header: tree or subgroups).

struct RedP {
    n_out: u32, r: u32, nk: u32, nr: u32,
    scale: f32, _p0: u32, _p1: u32, _p2: u32,
    kshape: array<vec4<u32>, 2>,
    kstride: array<vec4<u32>, 2>,
    rshape: array<vec4<u32>, 2>,
    rstride: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<uniform> rp: RedP;
@group(0) @binding(1) var<storage, read_write> rx: array<f32>;
@group(0) @binding(2) var<storage, read_write> ry: array<f32>;
@group(0) @binding(3) var<storage, read_write> ridx: array<u32>;

fn red_base(o: u32) -> u32 {
    var rem = o;
    var off = 0u;
    for (var d = i32(rp.nk) - 1; d >= 0; d = d - 1) {
        let k = u32(d);
        let s = rp.kshape[k / 4u][k % 4u];
        off = off + (rem % s) * rp.kstride[k / 4u][k % 4u];
        rem = rem / s;
    }
    return off;
}

fn red_off(r: u32) -> u32 {
    var rem = r;
    var off = 0u;
    for (var d = i32(rp.nr) - 1; d >= 0; d = d - 1) {
        let k = u32(d);
        let s = rp.rshape[k / 4u][k % 4u];
        off = off + (rem % s) * rp.rstride[k / 4u][k % 4u];
        rem = rem / s;
    }
    return off;
}

// Sum (times scale: 1 for sum, 1/R for mean).
@compute @workgroup_size(256)
fn reduce_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = elem_index(wid, nwg, lid);
    if (o >= rp.n_out) { return; }
    let base = red_base(o);
    var acc = 0.0;
    if (rp.nr == 1u) {
        let st = rp.rstride[0].x;
        for (var r = 0u; r < rp.r; r = r + 1u) { acc = acc + rx[base + r * st]; }
    } else {
        for (var r = 0u; r < rp.r; r = r + 1u) { acc = acc + rx[base + red_off(r)]; }
    }
    ry[o] = acc * rp.scale;
}

@compute @workgroup_size(256)
fn reduce_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let o = wg_linear(wid, nwg);
    let base = red_base(min(o, rp.n_out - 1u));
    var acc = 0.0;
    for (var r = ids.lid; r < rp.r; r = r + 256u) { acc = acc + rx[base + red_off(r)]; }
    let total = wg_sum(ids, acc);
    if (ids.lid == 0u && o < rp.n_out) { ry[o] = total * rp.scale; }
}

// Max with the index (within the reduced set) of the first maximum, for the backward pass.
@compute @workgroup_size(256)
fn reduce_max_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = elem_index(wid, nwg, lid);
    if (o >= rp.n_out) { return; }
    let base = red_base(o);
    var best = rx[base + red_off(0u)];
    var bi = 0u;
    for (var r = 1u; r < rp.r; r = r + 1u) {
        let v = rx[base + red_off(r)];
        if (v > best) { best = v; bi = r; }
    }
    ry[o] = best;
    ridx[o] = bi;
}

// dx[base(o) + off(idx[o])] = dy[o]; dx is zeroed first by a fill.
@compute @workgroup_size(256)
fn reduce_max_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = elem_index(wid, nwg, lid);
    if (o >= rp.n_out) { return; }
    // Bindings reused: rx = dy, ry = dx.
    ry[red_base(o) + red_off(ridx[o])] = rx[o];
}
