#![deny(unsafe_code)]

fn main() {
    std::process::exit(gpurun::cli::main());
}
