//! The `launch-proxy` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    launch_proxy::cli::main()
}
