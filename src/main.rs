fn main() {
    std::process::exit(gpurun::cli::main());
}
