//! `cargo bench`: the same measurements as `webdistill bench all` (matmul GFLOP/s per kernel
//! variant, dispatch cost per step), printed with the adapter name.

fn main() {
    let ctx = webdistill::Context::new().expect("a GPU adapter");
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512, 1024]);
    webdistill::bench::run(&ctx, "all", &sizes).expect("benchmark");
}
