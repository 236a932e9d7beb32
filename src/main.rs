//! The `launch-proxy` binary: everything lives in the library; see `cli`. Process-wide
//! settings that need `unsafe` (the library forbids it) are made here.

use launch_proxy::config::CpuScheduling;

/// mimalloc rather than glibc's malloc: see its line in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    launch_proxy::cli::main(set_cpu_scheduling)
}

/// `SCHED_BATCH` keeps the default priority and time slices and only gives up preempting a
/// running task on wake-up (see `launch_proxy::runtime`).
fn set_cpu_scheduling(policy: CpuScheduling) -> std::io::Result<()> {
    let policy = match policy {
        CpuScheduling::Normal => libc::SCHED_OTHER,
        CpuScheduling::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
