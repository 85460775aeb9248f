fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    {
        die_quietly_on_a_closed_pipe();
        let runtime_dir = quiet_mesa_without_runtime_dir();
        let result = webdistill::cli::main();
        if let Some(d) = runtime_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Err(e) = result {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Mesa's Vulkan drivers (lavapipe 22.x among them) print "XDG_RUNTIME_DIR is invalid or not
/// set" twice when the variable is missing, as on servers and in containers, although a
/// compute-only tool never opens a display. Point it at a private temporary folder then (removed
/// at exit), before any thread exists, so a user's first run shows no driver noise.
#[cfg(not(target_arch = "wasm32"))]
fn quiet_mesa_without_runtime_dir() -> Option<std::path::PathBuf> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir()) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("webdistill-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    // SAFETY: first statement of main, single-threaded: nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    Some(dir)
}

/// `webdistill predict ... | head` closes the pipe early; Rust ignores SIGPIPE, so the next
/// print would panic. Restore the default (end quietly, as other command-line tools do).
#[cfg(unix)]
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: first statement of main, single-threaded; SIG_DFL is always a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(all(not(unix), not(target_arch = "wasm32")))]
fn die_quietly_on_a_closed_pipe() {}
