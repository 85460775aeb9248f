// Sums and maxima over a 256-thread workgroup through subgroup operations: the same names and
// contract as wg_reduce_tree.wgsl (see there), two barriers instead of eight. Each subgroup
// reduces in registers, one lane per subgroup leaves the partial in shared memory, and every
// thread folds the partials in the same fixed order: the same result in every thread, run to
// run. Only families compiled when the device has Features::SUBGROUP include this header
// (naga rejects the `enable subgroups;` directive and needs none).

// subgroup_id / num_subgroups rather than lid / subgroup_size: nothing promises that
// consecutive invocation indices share a subgroup.
struct WgIds {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

// One partial per subgroup. 256 entries fit any subgroup size (WebGPU promises at least 4,
// Vulkan only 1) in no more shared memory than the tree uses. vec2 for wg_sum2; wg_sum and
// wg_max use .x, so that one array and one fold serve all three.
var<workgroup> wg_part: array<vec2<f32>, 256>;

// The partials summed pairwise, ((p0 + p1) + (p2 + p3)) + ..., as the tree's last levels add
// them. A sequential fold of lavapipe's 32 partials (subgroups of 8) costs enough accuracy
// to fail the resnet8 golden of tests/train_match.rs under WEBDISTILL_PROFILE=gpu. The stack
// holds one pending sum per level: 9 levels cover 256 partials.
fn wg_fold(n: u32) -> vec2<f32> {
    var st: array<vec2<f32>, 9>;
    var top = 0u;
    for (var i = 0u; i < n; i = i + 1u) {
        var v = wg_part[i];
        // Partial i completes one pair per trailing one bit of i.
        for (var k = i; (k & 1u) == 1u; k = k >> 1u) {
            top = top - 1u;
            v = st[top] + v;
        }
        st[top] = v;
        top = top + 1u;
    }
    var r = st[top - 1u];
    for (var j = top - 1u; j > 0u; j = j - 1u) { r = st[j - 1u] + r; }
    return r;
}

fn wg_sum2(ids: WgIds, v: vec2<f32>) -> vec2<f32> {
    let p = subgroupAdd(v);
    if (ids.lane == 0u) { wg_part[ids.sg] = p; }
    workgroupBarrier();
    let r = wg_fold(ids.nsg);
    // Everyone has read the partials before the next call overwrites them.
    workgroupBarrier();
    return r;
}

fn wg_sum(ids: WgIds, v: f32) -> f32 {
    let p = subgroupAdd(v);
    if (ids.lane == 0u) { wg_part[ids.sg] = vec2<f32>(p, 0.0); }
    workgroupBarrier();
    let r = wg_fold(ids.nsg).x;
    workgroupBarrier();
    return r;
}

// A maximum is exact in any order: a plain fold.
fn wg_max(ids: WgIds, v: f32) -> f32 {
    let p = subgroupMax(v);
    if (ids.lane == 0u) { wg_part[ids.sg] = vec2<f32>(p, 0.0); }
    workgroupBarrier();
    var r = wg_part[0].x;
    for (var i = 1u; i < ids.nsg; i = i + 1u) { r = max(r, wg_part[i].x); }
    workgroupBarrier();
    return r;
}
