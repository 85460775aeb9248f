//! `webdistill selftest`: the fixed self-test plan as JSON (for the browser parity test), and
//! `--bench`: one of the demo page's training sessions timed on this adapter.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::session::{self, Assets};

pub fn selftest(ctx: &Context, json: bool) -> Result<()> {
    let report = pollster::block_on(crate::selftest::run(ctx))?;
    if json {
        println!("{}", report.to_json());
        return Ok(());
    }
    println!("adapter: {}", report.adapter);
    for o in &report.outputs {
        let n = o.values.len();
        let head: Vec<String> = o.values.iter().take(4).map(|v| format!("{v:.6}")).collect();
        println!("{:<24} {:>10} [{}{}]", o.name, format!("{:?}", o.shape), head.join(", "), if n > 4 { ", ..." } else { "" });
    }
    Ok(())
}

pub fn bench(ctx: &Context, kind: &str, assets: &[String], steps: usize, chunk: usize, config: &str, json: bool) -> Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).map_err(|e| Error::usage(format!("--config is not JSON: {e}")))?;
    let mut files = Assets::new();
    for a in assets {
        let (name, path) = a.split_once('=').ok_or_else(|| Error::usage(format!("--asset '{a}': expected NAME=PATH")))?;
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        files.insert(name.to_string(), bytes);
    }
    let mut s = session::create(ctx, kind, &config, &files)?;
    let t = crate::bench::session_steps(s.as_mut(), steps, chunk)?;
    if json {
        let out = serde_json::json!({
            "adapter": ctx.adapter.to_string(),
            "steps": t.steps, "chunk": t.chunk, "seconds": t.seconds,
            "steps_per_sec": t.steps_per_sec(), "images_per_sec": t.images_per_sec(),
            "first_loss": t.first_loss, "last_loss": t.last_loss,
            "eval_loss": t.eval.loss, "accuracy": t.eval.accuracy,
            "session": s.describe(),
        });
        println!("{out}");
    } else {
        println!("adapter: {}", ctx.adapter);
        println!("session: {}", s.describe());
        println!("{t}");
    }
    Ok(())
}
