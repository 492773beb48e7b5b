//! Acceptance: landing on the soft vCPU. Thousands of seeded random targets
//! inside counted loops, REP string instructions (MOVSB/STOSB, RCX counting
//! down at one RIP), one-instruction `loop $` loops and a final `jmp $` land
//! exactly — same branches, RIP and RCX — with the host PMI skid at 0, 1, 64
//! and 128 instructions and the margin from the table (= skid); 100%.
//!
//! The oracle is the soft vCPU itself run with the monitor trap flag from
//! reset: every instruction boundary's (exact retired branches, RIP, RCX).
//! Landing reaches the target through the host PMU (armed overflow + MTF),
//! not through that count, and the two are compared at the end.
//!
//! `PMU_LANDING_PROGRAMS=N` scales the random test (default 40 programs x 25
//! targets x 4 skids = 4,000 landings).

use pmu_driver::arch::{IntelPmu, Rings};
use pmu_driver::{BranchCounter, CounterHardware, LandError, LandOptions, LandStep, land};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vcpu::{Completion, ExitReason, Regs, Timepoint, Vcpu};
use vcpu_soft::SoftVcpu;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x1000;
const SRC: u32 = 0x10_000;
const DST: u32 = 0x20_000;
const MEM: usize = 0x40_000;

/// Hand-assembled 32-bit code (the soft vCPU starts in flat 32-bit mode).
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn here(&self) -> u64 {
        CODE + self.0.len() as u64
    }
    fn b(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn mov_ecx(&mut self, v: u32) {
        self.b(&[0xB9]);
        self.b(&v.to_le_bytes());
    }
    fn mov_esi(&mut self, v: u32) {
        self.b(&[0xBE]);
        self.b(&v.to_le_bytes());
    }
    fn mov_edi(&mut self, v: u32) {
        self.b(&[0xBF]);
        self.b(&v.to_le_bytes());
    }
    /// `loop target` (E2 rel8).
    fn loop_to(&mut self, target: u64) {
        let rel = target as i64 - (self.here() as i64 + 2);
        self.b(&[0xE2, i8::try_from(rel).expect("short loop") as u8]);
    }
}

/// A random program: counted loops (bodies of NOPs, forward jumps,
/// conditional jumps and sometimes an `out`), REP MOVSB/STOSB, `loop $`,
/// straight-line code; then `hlt` and a `jmp $` that runs forever.
fn random_program(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut a = Asm::default();
    for _ in 0..rng.random_range(2..9) {
        match rng.random_range(0..5) {
            0 => {
                a.mov_ecx(rng.random_range(1..60));
                let top = a.here();
                for _ in 0..rng.random_range(0..4) {
                    match rng.random_range(0..3) {
                        0 => a.b(&[0x90]),                   // nop
                        1 => a.b(&[0xEB, 0x00]),             // jmp +0 (a branch)
                        _ => a.b(&[0x85, 0xC0, 0x74, 0x00]), // test eax,eax; je +0
                    }
                }
                if rng.random_bool(0.15) {
                    a.b(&[0xE6, 0x80]); // out 0x80, al
                }
                a.loop_to(top);
            }
            1 => {
                a.mov_ecx(rng.random_range(0..400));
                a.mov_esi(SRC);
                a.mov_edi(DST);
                a.b(&[0xF3, 0xA4]); // rep movsb
            }
            2 => {
                a.mov_ecx(rng.random_range(0..400));
                a.mov_edi(DST);
                a.b(&[0xF3, 0xAA]); // rep stosb
            }
            3 => {
                a.mov_ecx(rng.random_range(1..200));
                let here = a.here();
                a.loop_to(here); // loop $: same RIP every branch, RCX counting down
            }
            _ => {
                for _ in 0..rng.random_range(1..5) {
                    a.b(&[0x40]); // inc eax
                }
            }
        }
    }
    a.mov_ecx(rng.random_range(0..1000));
    a.b(&[0xF4]); // hlt
    a.b(&[0xEB, 0xFE]); // jmp $
    a.0
}

fn soft(code: &[u8], skid: u64) -> (SoftVcpu, BranchCounter) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
    let mut v = SoftVcpu::new(mem);
    v.set_regs(&Regs {
        rip: CODE,
        rsp: 0x8000,
        rflags: 2,
        ..Default::default()
    })
    .unwrap();
    v.set_host_pmi_skid(skid);
    let bank = v.host_pmu().expect("the soft vCPU has a host PMU");
    let pmu = IntelPmu::detect(bank).unwrap();
    let bc = BranchCounter::start(bank, pmu, 0, Rings::ALL, 0).unwrap();
    (v, bc)
}

fn here(v: &SoftVcpu) -> Timepoint {
    let r = v.regs().unwrap();
    Timepoint {
        vcpu: 0,
        branches: v.retired().unwrap().branches,
        rip: r.rip,
        rcx: r.rcx,
    }
}

/// Every instruction boundary (and REP iteration) of the first `n`.
fn trace(code: &[u8], n: usize) -> Vec<Timepoint> {
    let (mut v, _) = soft(code, 0);
    let mut c = v.controls().clone();
    c.monitor_trap_flag = true;
    v.set_controls(c).unwrap();
    let mut out = vec![here(&v)];
    while out.len() < n {
        let e = v.run().unwrap();
        match e.reason {
            ExitReason::MonitorTrapFlag => {}
            ExitReason::IoInstruction | ExitReason::Hlt => v.complete(Completion::Retire).unwrap(),
            r => panic!("unexpected {r:?} at {:#x}", e.rip),
        }
        let t = here(&v);
        if out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

fn land_on(
    code: &[u8],
    skid: u64,
    t: &Timepoint,
) -> Result<(SoftVcpu, BranchCounter, u64), LandError> {
    let (mut v, mut bc) = soft(code, skid);
    let margin = CounterHardware::Soft { skid: skid as u32 }.margin();
    let mut steps = 0;
    loop {
        match land(&mut v, &mut bc, t, &LandOptions::with_margin(margin))? {
            LandStep::Landed(s) => return Ok((v, bc, steps + s.steps)),
            LandStep::Exit(e, s) => {
                steps += s.steps;
                assert!(
                    matches!(e.reason, ExitReason::IoInstruction | ExitReason::Hlt),
                    "{e:?}"
                );
                v.complete(Completion::Retire).unwrap();
            }
        }
    }
}

#[test]
fn seeded_random_targets_land_exactly_on_the_soft_vcpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xCA5_50F7);
    let skids = [0u64, 1, 64, 128];
    let (mut landed, mut in_rep, mut in_tight) = (0u64, 0u64, 0u64);
    let mut steps = [0u64; 4];
    let mut baseline = 0u64;
    let programs: usize = std::env::var("PMU_LANDING_PROGRAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for p in 0..programs {
        let code = random_program(&mut rng);
        let tr = trace(&code, 3_000);
        for _ in 0..25 {
            let i = rng.random_range(0..tr.len());
            let t = tr[i];
            baseline += i as u64;
            // Classify by the instruction at the target.
            let off = (t.rip - CODE) as usize;
            match code.get(off..off + 2) {
                Some([0xF3, 0xA4 | 0xAA]) => in_rep += 1,
                Some([0xE2, 0xFE] | [0xEB, 0xFE]) => in_tight += 1,
                _ => {}
            }
            for (k, &skid) in skids.iter().enumerate() {
                let (mut v, bc, s) = land_on(&code, skid, &t)
                    .unwrap_or_else(|e| panic!("program {p}, target {t:?}, skid {skid}: {e}"));
                assert_eq!(here(&v), t, "program {p}, skid {skid}");
                assert_eq!(bc.total(v.host_pmu().unwrap()).unwrap(), t.branches);
                assert!(!v.controls().monitor_trap_flag);
                steps[k] += s;
                landed += 1;
            }
        }
    }
    let per = (programs * 25) as f64;
    for (k, skid) in skids.iter().enumerate() {
        println!(
            "skid {skid:3}: {:.1} single steps per landing (baseline, stepping from reset: {:.1})",
            steps[k] as f64 / per,
            baseline as f64 / per
        );
    }
    println!("{landed} landings exact; {in_rep} targets inside REP, {in_tight} in loop $/jmp $");
    assert_eq!(landed, (programs * 25 * 4) as u64);
    assert!(in_rep > 0 && in_tight > 0);
}

fn land_many(code: &[u8], targets: &[Timepoint], what: &str) {
    for t in targets {
        for skid in [0u64, 1, 64, 128] {
            let (v, _, _) = land_on(code, skid, t)
                .unwrap_or_else(|e| panic!("{what}: target {t:?}, skid {skid}: {e}"));
            assert_eq!(here(&v), *t, "{what}, skid {skid}");
        }
    }
}

#[test]
fn targets_inside_rep_string_instructions_land_on_the_exact_iteration() {
    let mut a = Asm::default();
    a.mov_ecx(3000);
    a.mov_esi(SRC);
    a.mov_edi(DST);
    let movs = a.here();
    a.b(&[0xF3, 0xA4]); // rep movsb
    a.mov_ecx(5);
    let l = a.here();
    a.loop_to(l);
    a.mov_ecx(900);
    a.mov_edi(DST);
    let stos = a.here();
    a.b(&[0xF3, 0xAA]); // rep stosb
    a.b(&[0xF4, 0xEB, 0xFE]);
    let tr = trace(&a.0, 5_000);
    let in_rep: Vec<Timepoint> = tr
        .iter()
        .copied()
        .filter(|t| t.rip == movs || t.rip == stos)
        .collect();
    // One boundary per iteration (MTF exits after each), RCX counting down.
    assert!(
        in_rep.len() >= 3_000 + 900 - 2,
        "{} REP boundaries",
        in_rep.len()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EB);
    let targets: Vec<Timepoint> = (0..300)
        .map(|_| in_rep[rng.random_range(0..in_rep.len())])
        .collect();
    land_many(&a.0, &targets, "inside REP");
}

#[test]
fn targets_in_tight_jmp_self_and_loop_self_land_on_the_exact_iteration() {
    // mov ecx, 42 ; jmp $ : every iteration has the same RIP and RCX.
    let mut a = Asm::default();
    a.mov_ecx(42);
    let j = a.here();
    a.b(&[0xEB, 0xFE]);
    let mut rng = ChaCha8Rng::seed_from_u64(0x1EB);
    let targets: Vec<Timepoint> = (0..200)
        .map(|_| Timepoint {
            vcpu: 0,
            branches: rng.random_range(0..100_000),
            rip: j,
            rcx: 42,
        })
        .collect();
    land_many(&a.0, &targets, "jmp $");

    // mov ecx, 100000 ; loop $ : same RIP, RCX = 100000 - branches.
    let mut a = Asm::default();
    a.mov_ecx(100_000);
    let l = a.here();
    a.loop_to(l);
    a.b(&[0xEB, 0xFE]);
    let targets: Vec<Timepoint> = (0..200)
        .map(|_| {
            let b = rng.random_range(0..100_000u64);
            Timepoint {
                vcpu: 0,
                branches: b,
                rip: l,
                rcx: 100_000 - b,
            }
        })
        .collect();
    land_many(&a.0, &targets, "loop $");
}

#[test]
fn a_margin_below_the_skid_is_reported_as_an_overshoot_on_the_soft_vcpu() {
    let mut a = Asm::default();
    a.mov_ecx(7);
    let j = a.here();
    a.b(&[0xEB, 0xFE]);
    let t = Timepoint {
        vcpu: 0,
        branches: 50_000,
        rip: j,
        rcx: 7,
    };
    let (mut v, mut bc) = soft(&a.0, 64);
    match land(&mut v, &mut bc, &t, &LandOptions::with_margin(10)) {
        Err(LandError::Overshoot { reached, .. }) => {
            assert_eq!(reached.branches, 50_000 - 10 + 64)
        }
        other => panic!("expected an overshoot, got {other:?}"),
    }
}
