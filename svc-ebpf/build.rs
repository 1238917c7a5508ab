//! Rebuild the programs when bpf-linker changes: the linker shapes the
//! object (BTF, relocations) as much as the source does.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
