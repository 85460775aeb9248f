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
    pollster::block_on(async {
        let first = s.step(1).await?;
        let chunk = chunk.max(1);
        let (mut done, mut secs, mut examples, mut last) = (0usize, 0.0f64, 0u64, first.clone());
        while done < steps {
            let n = chunk.min(steps - done);
            last = s.step(n).await?;
            done += n;
            secs += last.seconds;
            examples += last.examples;
        }
        let eval = s.evaluate().await?;
        let desc = s.describe();
        let steps_per_sec = done as f64 / secs.max(1e-9);
        let images_per_sec = examples as f64 / secs.max(1e-9);
        if json {
            let out = serde_json::json!({
                "adapter": ctx.adapter.to_string(),
                "steps": done, "chunk": chunk, "seconds": secs,
                "steps_per_sec": steps_per_sec, "images_per_sec": images_per_sec,
                "first_loss": first.loss, "last_loss": last.loss,
                "eval_loss": eval.loss, "accuracy": eval.accuracy,
                "session": desc,
            });
            println!("{out}");
        } else {
            println!("adapter: {}", ctx.adapter);
            println!("session: {}", desc);
            println!(
                "{done} steps in calls of {chunk} (after 1 warm-up step): {steps_per_sec:.1} steps/s, {images_per_sec:.0} images/s; loss {:.4} -> {:.4}; held-out loss {:.4}, accuracy {:.1}%",
                first.loss,
                last.loss,
                eval.loss,
                eval.accuracy.unwrap_or(0.0) * 100.0
            );
        }
        Ok::<(), Error>(())
    })
}
