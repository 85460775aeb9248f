// Rendering helpers for host applications (src/embed). These are not plan ops: a host records
// them into its own encoder to turn tensors that stay on the GPU into pixels of its texture.
//
// Bindings (every entry point uses the same ones; `draw` also binds the texture):
//   0 View uniform, 1 source tensor (read), 2 aux (read_write: ranges, or the loss ring),
//   3 target texture (rgba8unorm storage, write).
//
// Colours are stored sRGB-encoded (the colour-map tables' byte values / 255), as PNG files
// and non-sRGB swapchain formats expect them.

struct View {
    mode: u32,        // 0 grid of tiles, 1 bars, 2 curve, 3 curve over a loss ring
    cmap: u32,        // 0 viridis, 1 diverging (RdBu reversed), 2 grey
    range_mode: u32,  // 0 fixed [lo, hi], 1 auto (all values), 2 auto per tile
    symmetric: u32,   // 1: widen the range to [-m, m], m = max(|lo|, |hi|)
    lo: f32,
    hi: f32,
    base: u32,        // element offset of the first value in the source binding
    tiles: u32,
    tile_stride: u32,
    row_stride: u32,
    col_stride: u32,
    h: u32,           // grid: tile rows; bars/curve: unused
    w: u32,           // grid: tile columns; bars/curve/ring: value count or ring capacity
    columns: u32,     // grid: tiles per row of the picture
    gap: u32,         // grid: background cells between tiles
    _pad0: u32,
    dst_x: u32,
    dst_y: u32,
    dst_w: u32,
    dst_h: u32,
    background: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: View;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> aux: array<f32>;
@group(0) @binding(3) var dst: texture_storage_2d<rgba8unorm, write>;

// viridis (matplotlib) at i/9, as bytes.
const VIRIDIS = array<vec3<f32>, 10>(
    vec3<f32>(68.0, 1.0, 84.0), vec3<f32>(72.0, 40.0, 120.0), vec3<f32>(62.0, 74.0, 137.0),
    vec3<f32>(49.0, 104.0, 142.0), vec3<f32>(38.0, 130.0, 142.0), vec3<f32>(31.0, 158.0, 137.0),
    vec3<f32>(53.0, 183.0, 121.0), vec3<f32>(109.0, 205.0, 89.0), vec3<f32>(180.0, 222.0, 44.0),
    vec3<f32>(253.0, 231.0, 37.0));
// ColorBrewer RdBu (11 classes) reversed: blue for low, near white at the centre, red for high.
const DIVERGING = array<vec3<f32>, 11>(
    vec3<f32>(5.0, 48.0, 97.0), vec3<f32>(33.0, 102.0, 172.0), vec3<f32>(67.0, 147.0, 195.0),
    vec3<f32>(146.0, 197.0, 222.0), vec3<f32>(209.0, 229.0, 240.0), vec3<f32>(247.0, 247.0, 247.0),
    vec3<f32>(253.0, 219.0, 199.0), vec3<f32>(244.0, 165.0, 130.0), vec3<f32>(214.0, 96.0, 77.0),
    vec3<f32>(178.0, 24.0, 43.0), vec3<f32>(103.0, 0.0, 31.0));

// NaN and infinities are drawn in this colour (magenta) where a value is shown.
const BAD = vec3<f32>(1.0, 0.0, 1.0);

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn colormap(t: f32) -> vec3<f32> {
    let u = clamp(t, 0.0, 1.0);
    if (p.cmap == 2u) {
        return vec3<f32>(u, u, u);
    }
    if (p.cmap == 1u) {
        var lut = DIVERGING;
        let f = u * 10.0;
        let i = min(u32(floor(f)), 9u);
        return mix(lut[i], lut[i + 1u], f - f32(i)) / 255.0;
    }
    var lut = VIRIDIS;
    let f = u * 9.0;
    let i = min(u32(floor(f)), 8u);
    return mix(lut[i], lut[i + 1u], f - f32(i)) / 255.0;
}

// ---- the values a view shows, by (tile, index within the tile)

fn ring_head() -> u32 {
    return bitcast<u32>(src[p.base + 2u]);
}

// How many values there are: per tile for grids, in total for the others.
fn count() -> u32 {
    switch p.mode {
        case 0u: { return p.h * p.w; }
        case 3u: { return min(ring_head(), p.w); }
        default: { return p.w; }
    }
}

fn value(tile: u32, i: u32) -> f32 {
    switch p.mode {
        case 0u: {
            let y = i / p.w;
            let x = i % p.w;
            return src[p.base + tile * p.tile_stride + y * p.row_stride + x * p.col_stride];
        }
        case 3u: {
            let n = count();
            let head = ring_head();
            return src[p.base + 4u + (head - n + i) % p.w];
        }
        default: { return src[p.base + i * p.col_stride]; }
    }
}

// ---- minmax: one workgroup per range (one in total, or one per tile)

var<workgroup> wg_lo: array<f32, 64>;
var<workgroup> wg_hi: array<f32, 64>;

@compute @workgroup_size(64)
fn minmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    var lo = 3.4e38;
    var hi = -3.4e38;
    let n = count();
    if (p.mode == 0u && p.range_mode == 1u) {
        // One range over every tile.
        let total = n * p.tiles;
        for (var k = lid; k < total; k += 64u) {
            let v = value(k / n, k % n);
            if (finite(v)) {
                lo = min(lo, v);
                hi = max(hi, v);
            }
        }
    } else {
        for (var k = lid; k < n; k += 64u) {
            let v = value(g, k);
            if (finite(v)) {
                lo = min(lo, v);
                hi = max(hi, v);
            }
        }
    }
    wg_lo[lid] = lo;
    wg_hi[lid] = hi;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wg_lo[lid] = min(wg_lo[lid], wg_lo[lid + s]);
            wg_hi[lid] = max(wg_hi[lid], wg_hi[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var a = wg_lo[0];
        var b = wg_hi[0];
        if (a > b) {
            // Nothing finite.
            a = 0.0;
            b = 0.0;
        }
        aux[2u * g] = a;
        aux[2u * g + 1u] = b;
    }
}

// The value range of a tile, after the fixed / auto / symmetric rules.
fn range_of(tile: u32) -> vec2<f32> {
    var r = vec2<f32>(p.lo, p.hi);
    if (p.range_mode == 1u) {
        r = vec2<f32>(aux[0], aux[1]);
    } else if (p.range_mode == 2u) {
        r = vec2<f32>(aux[2u * tile], aux[2u * tile + 1u]);
    }
    if (p.mode == 1u && p.range_mode != 0u) {
        // Bars grow from zero.
        r = vec2<f32>(min(r.x, 0.0), max(r.y, 0.0));
    }
    if (p.symmetric == 1u) {
        let m = max(abs(r.x), abs(r.y));
        r = vec2<f32>(-m, m);
    }
    return r;
}

fn normalise(v: f32, r: vec2<f32>) -> f32 {
    if (r.y > r.x) {
        return clamp((v - r.x) / (r.y - r.x), 0.0, 1.0);
    }
    return 0.5;
}

fn grid_pixel(x: u32, y: u32) -> vec4<f32> {
    let rows = (p.tiles + p.columns - 1u) / p.columns;
    let gw = f32(p.columns * p.w + (p.columns - 1u) * p.gap);
    let gh = f32(rows * p.h + (rows - 1u) * p.gap);
    let s = min(f32(p.dst_w) / gw, f32(p.dst_h) / gh);
    let ox = (f32(p.dst_w) - gw * s) * 0.5;
    let oy = (f32(p.dst_h) - gh * s) * 0.5;
    let fx = (f32(x) + 0.5 - ox) / s;
    let fy = (f32(y) + 0.5 - oy) / s;
    if (fx < 0.0 || fy < 0.0 || fx >= gw || fy >= gh) {
        return p.background;
    }
    let cx = u32(fx);
    let cy = u32(fy);
    let tx = cx / (p.w + p.gap);
    let ty = cy / (p.h + p.gap);
    let ix = cx % (p.w + p.gap);
    let iy = cy % (p.h + p.gap);
    let tile = ty * p.columns + tx;
    if (ix >= p.w || iy >= p.h || tile >= p.tiles) {
        return p.background;
    }
    let v = value(tile, iy * p.w + ix);
    if (!finite(v)) {
        return vec4<f32>(BAD, 1.0);
    }
    return vec4<f32>(colormap(normalise(v, range_of(tile))), 1.0);
}

fn bars_pixel(x: u32, y: u32) -> vec4<f32> {
    let n = count();
    if (n == 0u) {
        return p.background;
    }
    let bin = min(x * n / p.dst_w, n - 1u);
    // Leave a one-pixel gap between bars when they are at least three pixels wide.
    if (p.dst_w >= 3u * n && (x + 1u) * n / p.dst_w != bin) {
        return p.background;
    }
    let v = value(0u, bin);
    if (!finite(v)) {
        return vec4<f32>(BAD, 1.0);
    }
    let t = normalise(v, range_of(0u));
    let from_bottom = f32(p.dst_h - 1u - y) + 0.5;
    if (from_bottom <= max(t * f32(p.dst_h), 1.0)) {
        return vec4<f32>(colormap(t), 1.0);
    }
    return p.background;
}

// Value at a continuous position u in [0, n-1] (linear between samples).
fn curve_at(u: f32, n: u32) -> f32 {
    let i = min(u32(floor(u)), n - 1u);
    let j = min(i + 1u, n - 1u);
    return mix(value(0u, i), value(0u, j), u - f32(i));
}

fn curve_pixel(x: u32, y: u32) -> vec4<f32> {
    let n = count();
    if (n == 0u) {
        return p.background;
    }
    let r = range_of(0u);
    let last = f32(n - 1u);
    let scale = last / max(f32(p.dst_w) - 1.0, 1.0);
    let ua = clamp((f32(x) - 0.5) * scale, 0.0, last);
    let ub = clamp((f32(x) + 0.5) * scale, 0.0, last);
    var lo = curve_at(ua, n);
    var hi = lo;
    let vb = curve_at(ub, n);
    lo = min(lo, vb);
    hi = max(hi, vb);
    // Samples inside this column (bounded: a very long curve is drawn from a subset).
    let first = u32(ceil(ua));
    let end = min(u32(floor(ub)), first + 64u);
    for (var i = first; i <= end && i < n; i++) {
        let v = value(0u, i);
        lo = min(lo, v);
        hi = max(hi, v);
    }
    if (!finite(lo) || !finite(hi)) {
        return p.background;
    }
    let hgt = max(f32(p.dst_h) - 1.0, 1.0);
    let y_hi = (1.0 - normalise(hi, r)) * hgt;
    let y_lo = (1.0 - normalise(lo, r)) * hgt;
    let fy = f32(y);
    if (fy >= y_hi - 0.75 && fy <= y_lo + 0.75) {
        return vec4<f32>(colormap(normalise(curve_at(0.5 * (ua + ub), n), r)), 1.0);
    }
    return p.background;
}

@compute @workgroup_size(8, 8)
fn draw(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    if (x >= p.dst_w || y >= p.dst_h) {
        return;
    }
    var c: vec4<f32>;
    switch p.mode {
        case 0u: { c = grid_pixel(x, y); }
        case 1u: { c = bars_pixel(x, y); }
        default: { c = curve_pixel(x, y); }
    }
    textureStore(dst, vec2<i32>(i32(p.dst_x + x), i32(p.dst_y + y)), c);
}

// ---- loss ring: aux = [previous sum, previous count, head (u32 bits), capacity (u32 bits),
// values...]; src = the session's metrics [loss sum, step count, ...] summed since the last
// reset. Appends the mean loss of the steps since the previous record.

@compute @workgroup_size(1)
fn record_loss() {
    let sum = src[p.base];
    let cnt = src[p.base + 1u];
    var ps = aux[0];
    var pc = aux[1];
    if (cnt < pc) {
        // The metrics were reset without us being told: count from zero.
        ps = 0.0;
        pc = 0.0;
    }
    let dc = cnt - pc;
    if (dc >= 0.5) {
        let head = bitcast<u32>(aux[2]);
        aux[4u + head % p.w] = (sum - ps) / dc;
        aux[2] = bitcast<f32>(head + 1u);
    }
    aux[0] = sum;
    aux[1] = cnt;
}
