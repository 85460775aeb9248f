fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    if let Err(e) = webdistill::cli::main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
