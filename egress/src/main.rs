//! `strait-egress`: the command line over the shared engine.

/// jemalloc, with a background thread returning freed pages to the system within about
/// a second (settings in `.cargo/config.toml`): glibc's malloc kept ~100 MiB per process
/// after a flood of connections closed (issue 18).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    strait::cli::main(strait::config::Role::Egress)
}
