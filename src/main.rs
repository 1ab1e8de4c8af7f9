// The gateway allocates and frees many small buffers per call (JSON values,
// HTTP frames); mimalloc measured markedly cheaper than glibc malloc on this
// workload (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tollgate::cli::main()
}
