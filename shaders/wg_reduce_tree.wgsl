// Sums and maxima over a 256-thread workgroup: the shared-memory tree, log2(256) = 8
// barriers. wg_reduce_subgroup.wgsl defines the same names over subgroup operations;
// src/gpu/kernels.rs registers each file that reduces once behind each header (families `x`
// and `x_sg`) and Lowering::dispatch_wg_reduce picks one by KernelProfile::subgroups.
// Every thread of the workgroup must call them (uniform control flow) and gets the same
// result; the shared memory is free for the next call on return.

// The invocation ids a reduction needs, taken as one entry-point argument `ids: WgIds`: the
// subgroup header adds builtins here that a device without subgroups would refuse.
struct WgIds { @builtin(local_invocation_index) lid: u32 }

var<workgroup> wg_sh: array<f32, 256>;
var<workgroup> wg_sh2: array<vec2<f32>, 256>;

fn wg_sum(ids: WgIds, v: f32) -> f32 {
    let lid = ids.lid;
    wg_sh[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { wg_sh[lid] = wg_sh[lid] + wg_sh[lid + s]; }
        workgroupBarrier();
    }
    let r = wg_sh[0];
    workgroupBarrier();
    return r;
}

fn wg_max(ids: WgIds, v: f32) -> f32 {
    let lid = ids.lid;
    wg_sh[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { wg_sh[lid] = max(wg_sh[lid], wg_sh[lid + s]); }
        workgroupBarrier();
    }
    let r = wg_sh[0];
    workgroupBarrier();
    return r;
}

// Two sums in one tree (half the barriers of two wg_sum calls).
fn wg_sum2(ids: WgIds, v: vec2<f32>) -> vec2<f32> {
    let lid = ids.lid;
    wg_sh2[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { wg_sh2[lid] = wg_sh2[lid] + wg_sh2[lid + s]; }
        workgroupBarrier();
    }
    let r = wg_sh2[0];
    workgroupBarrier();
    return r;
}
