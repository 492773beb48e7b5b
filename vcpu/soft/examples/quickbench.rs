//! Quick MIPS check of the soft vCPU (the real benchmark is `motion bench cpu`).
fn main() {
    for w in [
        vcpu_soft::bench::loop_workload(50_000_000),
        vcpu_soft::bench::mem_workload(800),
    ] {
        match vcpu_soft::bench::run_soft(&w) {
            Ok(m) => println!(
                "{}: {} insns in {:?}: {:.0} MIPS",
                w.name,
                m.instructions,
                m.elapsed,
                m.mips()
            ),
            Err(e) => println!("{}: {e}", w.name),
        }
    }
}
