//! Wiring only: everything lives in the library.
#![forbid(unsafe_code)]

/// mimalloc: fewer instructions per allocation than glibc's malloc on the
/// proxy's hot path (bench/RESULTS.md); its idle RSS is kept within the
/// gateway's 15 MiB target there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    harbormaster::cli::main()
}
