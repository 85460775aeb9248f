// Strided copies (bit-exact: u32 words, so they serve f32 and u32 tensors): permute, expand (broadcast), slice, concat, pad. A tensor of `rank` dims
// with shape `shape` is read (gather) or written (scatter) at base + sum(c_d * st_d).

struct LayP {
    n: u32, rank: u32, base: u32, _p: u32,
    shape: array<vec4<u32>, 2>,
    st: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<uniform> lp: LayP;
@group(0) @binding(1) var<storage, read_write> lsrc: array<u32>;
@group(0) @binding(2) var<storage, read_write> ldst: array<u32>;

fn lay_off(i: u32) -> u32 {
    var rem = i;
    var off = lp.base;
    for (var d = i32(lp.rank) - 1; d >= 0; d = d - 1) {
        let k = u32(d);
        let s = lp.shape[k / 4u][k % 4u];
        off = off + (rem % s) * lp.st[k / 4u][k % 4u];
        rem = rem / s;
    }
    return off;
}

// dst[i] = src[off(i)]
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= lp.n) { return; }
    ldst[i] = lsrc[lay_off(i)];
}

// dst[off(i)] = src[i]
@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= lp.n) { return; }
    ldst[lay_off(i)] = lsrc[i];
}
