//! The `hopwatch` binary: everything lives in the library; see `hopwatch::cli`.

fn main() -> std::process::ExitCode {
    hopwatch::cli::main()
}
