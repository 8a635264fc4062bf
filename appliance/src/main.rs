//! The `pbxha` command: parses arguments, sets up logging and calls into the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
