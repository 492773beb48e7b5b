//! `motion bench cpu --json`: the last line is one JSON object with the soft
//! vCPU's loop and memory MIPS and the native figure (or why it is missing).

use std::process::Command;

use motion_e2e::motion_bin::motion_bin;
use serde_json::Value;

#[test]
fn bench_cpu_json_has_the_figures_on_its_last_line() {
    let out = Command::new(motion_bin())
        .args([
            "bench",
            "cpu",
            "--json",
            "--loop-iters",
            "200000",
            "--mem-passes",
            "5",
            "--runs",
            "1",
        ])
        .output()
        .expect("run motion");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let last = text.lines().last().expect("output");
    let v: Value = serde_json::from_str(last).expect("JSON on the last line");
    let soft_loop = v["soft_mips_loop"].as_f64().expect("soft_mips_loop");
    let soft_mem = v["soft_mips_mem"].as_f64().expect("soft_mips_mem");
    assert!(soft_loop > 0.0 && soft_mem > 0.0);
    assert_eq!(v["loop_instructions"], 3 + 6 * 200_000);
    match v["native_mips_loop"].as_f64() {
        Some(n) => {
            assert!(n > 0.0);
            assert!(v["native_unavailable_reason"].is_null());
        }
        None => {
            assert!(
                v["native_unavailable_reason"].is_string(),
                "a missing native figure says why"
            );
            println!("native: {}", v["native_unavailable_reason"]);
        }
    }
    // The QEMU baseline is a number or comes with a reason.
    assert!(v["qemu_tcg_icount_mips_loop"].is_number() || v["qemu_unavailable_reason"].is_string());
    assert!(text.contains("MIPS"));
}
