//! Wiring only: everything lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    harbormaster::cli::main()
}
