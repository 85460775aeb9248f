//! report.md and the report's charts, from the [`Report`] alone (so a report.json from any
//! machine renders the same).

use super::Report;
use std::fmt::Write;
use std::path::Path;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

/// The charts: matmul GFLOP/s by size and variant, student top-1 by method. Chart failures
/// are not the report's: they are skipped (the numbers are in the tables).
pub fn charts(r: &Report, out: &Path) {
    let mut variants: Vec<&str> = r.matmul.iter().map(|m| m.variant.as_str()).collect();
    variants.sort();
    variants.dedup();
    let series: Vec<(&str, Vec<(f32, f32)>)> = variants
        .iter()
        .map(|v| (*v, r.matmul.iter().filter(|m| m.variant == *v).map(|m| (m.n as f32, m.gflops as f32)).collect()))
        .collect();
    if series.iter().any(|(_, p)| p.len() > 1) {
        let title = format!("f32 matmul n x n x n, {}", r.adapter.name);
        crate::train::report::line_chart(&out.join("matmul.png"), &title, "n", "GFLOP/s", &series).ok();
    }
    let students: Vec<&str> = ["vit_micro_p4", "mixer_micro_p4"].into_iter().filter(|s| r.runs.iter().any(|x| x.model == *s)).collect();
    let methods = ["none", "kd", "dkd", "ofa"];
    if !students.is_empty() {
        let mut m = Vec::new();
        for s in &students {
            for k in methods {
                let v: Vec<f64> = r.runs.iter().filter(|x| x.model == *s && x.method == k).filter_map(|x| x.top1).collect();
                m.push(if v.is_empty() { f32::NAN } else { (v.iter().sum::<f64>() / v.len() as f64) as f32 });
            }
        }
        let rows: Vec<String> = students.iter().map(|s| s.to_string()).collect();
        let cols: Vec<String> = methods.iter().map(|s| s.to_string()).collect();
        crate::train::report::heatmap(&out.join("students.png"), "student test top-1 (%) by method", &m, &rows, &cols, "student", "method")
            .ok();
    }
}

/// report.md: the same sections in the same order as the run.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let a = &r.adapter;
    let _ = writeln!(s, "# webdistill GPU report{}\n", if r.smoke { " (smoke: tiny sizes, not evidence)" } else { "" });
    let _ = writeln!(s, "Commit `{}`, budget {:.1} min, {:.0} s so far. Data: `{}`.\n", r.commit, r.minutes, r.elapsed_s, r.data);
    let _ = writeln!(s, "## 1. Adapter\n");
    let _ = writeln!(s, "- **{}** ({}, {}), driver {}", a.name, a.backend, a.device_type, a.driver);
    let _ = writeln!(
        s,
        "- software adapter: {}; kernel profile **{}** (matmul {}, serial rows up to {}, subgroup reductions {}, wide-tile K step {}, linear-backward split-K {})",
        a.software, a.profile, a.matmul_variant, a.serial_row_max, a.subgroup_reductions, a.wide_bk, a.split_k
    );
    let _ = writeln!(
        s,
        "- limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} storage buffers/stage, subgroups {}",
        a.max_storage_binding_mib,
        a.max_buffer_mib,
        a.workgroup_storage_kib,
        a.invocations_per_workgroup,
        a.storage_buffers_per_stage,
        a.subgroups
    );
    let _ = writeln!(s, "- f32 peak: {} GFLOP/s ({})\n", opt(a.peak_gflops, 0), a.peak_source);

    let _ = writeln!(s, "## 2. Correctness on this adapter\n");
    let failed: Vec<_> = r.checks.iter().filter(|c| !c.ok).collect();
    let _ = writeln!(s, "{} checks, **{} failed**.\n", r.checks.len(), failed.len());
    if !r.checks.is_empty() {
        // One row per check, one column per kernel profile: relative error (FAILED marked).
        let mut profiles: Vec<&str> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for c in &r.checks {
            if !profiles.contains(&c.profile.as_str()) {
                profiles.push(&c.profile);
            }
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        let _ = writeln!(s, "Relative error against the reference (tolerance: 1e-4 forward, 2e-3 gradients):\n");
        let _ = writeln!(s, "| check | {} |\n|---|{}", profiles.join(" | "), "---|".repeat(profiles.len()));
        for n in names {
            let cells: Vec<String> = profiles
                .iter()
                .map(|p| match r.checks.iter().find(|c| c.name == n && c.profile == *p) {
                    None => String::new(),
                    Some(c) => {
                        let e = c.rel_error.map(|e| format!("{e:.1e}")).unwrap_or_else(|| c.error.clone().unwrap_or_default());
                        if c.ok { e } else { format!("**FAILED** {e}") }
                    }
                })
                .collect();
            let _ = writeln!(s, "| {n} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## 3. Benchmarks\n");
    if !r.matmul.is_empty() {
        let _ = writeln!(s, "Matmul n x n x n, f32 (`matmul.png`):\n\n| n | variant | GFLOP/s | % of peak |\n|---|---|---|---|");
        for m in &r.matmul {
            let _ = writeln!(s, "| {} | {} | {:.1} | {} |", m.n, m.variant, m.gflops, opt(m.pct_peak, 1));
        }
        let _ = writeln!(s);
    }
    if !r.conv.is_empty() {
        let _ = writeln!(s, "| convolution | forward ms | input grad ms | weight grad ms |\n|---|---|---|---|");
        for c in &r.conv {
            let _ = writeln!(s, "| {} | {:.3} | {:.3} | {:.3} |", c.label, c.forward_ms, c.input_grad_ms, c.weight_grad_ms);
        }
        let _ = writeln!(s);
    }
    if let Some(d) = &r.dispatch {
        let _ = writeln!(
            s,
            "Dispatch cost: {:.1} us each in one submit, {:.1} us with a submit each, {:.1} us with a submit and wait each.\n",
            d.one_submit_us, d.submit_each_us, d.submit_and_wait_us
        );
    }
    if !r.steps.is_empty() || !r.distill_step.is_empty() {
        let _ = writeln!(s, "| step | batch | ms | images/s | dispatches | arena MiB |\n|---|---|---|---|---|---|");
        for t in &r.steps {
            let _ =
                writeln!(s, "| {} | {} | {:.1} | {:.0} | {} | {:.1} |", t.what, t.batch, t.ms, t.images_per_s, t.dispatches, t.arena_mib);
        }
        for d in &r.distill_step {
            let _ = writeln!(
                s,
                "| OFA step resnet20 -> {} | {} | {:.1} | {:.0} | {} | {:.1} (with store {:.1}) |",
                d.student, d.batch, d.ms, d.images_per_s, d.dispatches, d.arena_mib, d.memory_mib
            );
        }
        let _ = writeln!(s);
    }
    if !r.distill_dispatches.is_empty() {
        let top: Vec<String> = r.distill_dispatches.iter().take(12).map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(s, "Dispatches of the first OFA step by kernel: {}.\n", top.join(", "));
    }

    let _ = writeln!(s, "## 4. PyTorch on the same step\n");
    match &r.torch {
        Some(t) if !t.is_empty() => {
            let _ = writeln!(
                s,
                "{}\n\n| student | PyTorch | batch | ms | images/s | peak MiB | ours / PyTorch (time) |\n|---|---|---|---|---|---|---|",
                r.torch_note
            );
            for x in t {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.0} | {} | {} |",
                    x.student,
                    x.mode,
                    x.batch,
                    x.ms,
                    x.images_per_s,
                    opt(x.peak_mib, 1),
                    opt(x.ours_over_torch, 2)
                );
            }
            let _ = writeln!(s);
        }
        _ => {
            let _ = writeln!(s, "Not measured: {}.\n", r.torch_note);
        }
    }

    let _ = writeln!(s, "## 5. Training evidence\n");
    if r.runs.is_empty() {
        let _ = writeln!(s, "No runs yet.\n");
    } else {
        let _ = writeln!(
            s,
            "| kind | model | method | seed | images | epochs | top-1 % | seconds | note |\n|---|---|---|---|---|---|---|---|---|"
        );
        for x in &r.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
                x.kind,
                x.model,
                x.method,
                x.seed,
                x.images,
                x.epochs,
                opt(x.top1, 2),
                x.seconds,
                x.note
            );
        }
        let _ = writeln!(s, "\nStudents by method: `students.png`. Each run's folder (config, metrics, checkpoints) is under `runs/`.\n");
    }
    let _ = writeln!(s, "## Sections\n\n| section | seconds | status |\n|---|---|---|");
    for x in &r.sections {
        let _ = writeln!(s, "| {} | {:.0} | {} |", x.name, x.seconds, x.status);
    }
    s
}
