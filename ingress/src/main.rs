//! `strait-ingress`: the command line over the shared engine.

fn main() -> std::process::ExitCode {
    strait::cli::main(strait::config::Role::Ingress)
}
