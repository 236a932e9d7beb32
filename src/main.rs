//! The `launch-proxy` binary: everything lives in the library; see `cli`.

/// mimalloc rather than glibc's malloc: see its line in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    launch_proxy::cli::main()
}
