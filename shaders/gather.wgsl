// Gathers along one axis with a fixed index table, and their adjoint. A tensor is viewed as
// [outer, L, inner] around the gathered axis; the index has M entries in 0..L.
//   gather_rows:  y[a, m, c] = x[a, idx[m], c]                        (y is [outer, M, inner])
//   scatter_rows: dx[a, l, c] = sum of dy[a, m, c] over the m with idx[m] = l
// The adjoint needs no atomics: an inverse index in CSR form (built on the host) lists, for
// each l, the positions m that read it (off[l]..off[l+1] into pos), so each output element
// sums its own contributions. Repeated indices (relative position bias lookups) and
// permutations (Swin's cyclic shift + window partition) both take this path.

struct GaP { total: u32, l: u32, m: u32, inner: u32 }
@group(0) @binding(0) var<uniform> gp: GaP;
@group(0) @binding(1) var<storage, read_write> gx: array<f32>;
@group(0) @binding(2) var<storage, read_write> gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gidx: array<u32>;
@group(0) @binding(4) var<storage, read_write> goff: array<u32>;

// One thread per output element of [outer, M, inner]. Bindings: x (1), y (2), idx (3).
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    if (e >= gp.total) { return; }
    let c = e % gp.inner;
    let m = (e / gp.inner) % gp.m;
    let a = e / (gp.inner * gp.m);
    gy[e] = gx[(a * gp.l + gidx[m]) * gp.inner + c];
}

// One thread per output element of [outer, L, inner]. Bindings: dy (1), dx (2), pos (3),
// off (4).
@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    if (e >= gp.total) { return; }
    let c = e % gp.inner;
    let l = (e / gp.inner) % gp.l;
    let a = e / (gp.inner * gp.l);
    var acc = 0.0;
    for (var k = goff[l]; k < goff[l + 1u]; k = k + 1u) {
        acc = acc + gx[(a * gp.m + gidx[k]) * gp.inner + c];
    }
    gy[e] = acc;
}
