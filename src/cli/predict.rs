//! `webdistill models`: the registry as a table.

use crate::error::Result;
use crate::graph::Graph;
use crate::models;
use crate::nn::Fwd;
use crate::store::Store;

/// Parameter count, FLOPs per image and stage shapes of every registered model.
pub fn list_models() -> Result<()> {
    println!("{:<26} {:>10} {:>11} {:>6}  stage features (per image)", "model", "params", "GFLOPs/img", "input");
    for e in models::registry() {
        let cfg = e.default_config();
        let mut store = Store::new(0);
        let net = (e.build)(&mut crate::nn::Builder::new(&mut store, ""), &cfg)?;
        let mut g = Graph::new();
        let x = g.input("x", &[1, cfg.in_chans, cfg.img_size, cfg.img_size])?;
        net.forward(&mut g, x, Fwd::eval())?;
        let feats: Vec<String> = net.feature_shapes().iter().map(|f| f.to_string()).collect();
        println!(
            "{:<26} {:>9.2}M {:>11.3} {:>6}  {}",
            e.name,
            store.param_count() as f64 / 1e6,
            g.flops() as f64 / 1e9,
            format!("{}px", cfg.img_size),
            feats.join(", ")
        );
    }
    Ok(())
}
