// Peak f32 throughput: every thread runs 8 independent vec4 multiply-add chains for `iters`
// rounds (64 flops a round), so the ALUs, not memory, set the pace. The sum goes to memory
// only so that the compiler cannot drop the loop. `webdistill report` uses it where the
// adapter's published peak is not known.
//   peak_fma   out (1): one f32 per thread.

struct PeakP { iters: u32, seed: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> pp: PeakP;
@group(0) @binding(1) var<storage, read_write> peak_out: array<f32>;

@compute @workgroup_size(256)
fn peak_fma(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    // Multiplier just under 1 and a tiny addend: the chains stay finite for any iters.
    let m = vec4<f32>(0.999999, 0.999998, 0.999997, 0.999996);
    let c = vec4<f32>(f32(pp.seed) * 1e-7);
    var a0 = vec4<f32>(f32(e) * 1e-6); var a1 = a0 + 0.1; var a2 = a0 + 0.2; var a3 = a0 + 0.3;
    var a4 = a0 + 0.4; var a5 = a0 + 0.5; var a6 = a0 + 0.6; var a7 = a0 + 0.7;
    for (var i = 0u; i < pp.iters; i = i + 1u) {
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    }
    let s = (a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7);
    peak_out[e] = s.x + s.y + s.z + s.w;
}
