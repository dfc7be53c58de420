//! The `backchain` command line: argument parsing over the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
