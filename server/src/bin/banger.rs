//! `banger`: the command line.

fn main() -> std::process::ExitCode {
    banger::cli::main()
}
