//! The landing algorithm against the toy vCPU over the PMU model: seeded
//! random targets inside counted loops, REP string instructions and tight
//! `jmp $` loops, with PMI skid 0, 1, 64 and 128, must all land exactly
//! (same branches, rip, rcx — checked against the vCPU's own exact count);
//! a margin smaller than the skid, or a target the execution never passes
//! through, must be reported as an overshoot.

use pmu_driver::arch::{IntelPmu, Rings};
use pmu_driver::model::SimConfig;
use pmu_driver::model::toy::{Op, Program, ToyVcpu};
use pmu_driver::{BranchCounter, LandError, LandOptions, LandStats, LandStep, Phase, land};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vcpu::{Completion, ExitReason, Timepoint, Vcpu};

fn vcpu(prog: &Program, skid: u32) -> (ToyVcpu, BranchCounter) {
    let mut v = ToyVcpu::new(
        prog.clone(),
        SimConfig {
            skid,
            ..SimConfig::default()
        },
    );
    let bank = v.host_pmu().unwrap();
    let pmu = IntelPmu::detect(bank).unwrap();
    let bc = BranchCounter::start(bank, pmu, 0, Rings::ALL, 0).unwrap();
    (v, bc)
}

/// Every instruction boundary of the first `steps` steps, from the vCPU's
/// own exact counts (not the PMU): the oracle.
fn trace(prog: &Program, steps: usize) -> Vec<Timepoint> {
    let (mut v, _) = vcpu(prog, 0);
    let mut c = v.controls().clone();
    c.monitor_trap_flag = true;
    v.set_controls(c).unwrap();
    let here = |v: &ToyVcpu| {
        let r = v.regs().unwrap();
        Timepoint {
            vcpu: 0,
            branches: v.retired().unwrap().branches,
            rip: r.rip,
            rcx: r.rcx,
        }
    };
    let mut out = vec![here(&v)];
    while out.len() < steps {
        let e = v.run().unwrap();
        match e.reason {
            ExitReason::MonitorTrapFlag => {
                let t = here(&v);
                if out.last() != Some(&t) {
                    out.push(t);
                }
            }
            ExitReason::IoInstruction | ExitReason::Hlt => v.complete(Completion::Retire).unwrap(),
            ExitReason::ExternalInterrupt => {}
            r => panic!("unexpected {r:?}"),
        }
    }
    out
}

/// Land on `t`, completing I/O and HLT exits on the way as a replayer would.
fn land_on(
    prog: &Program,
    skid: u32,
    margin: u64,
    t: &Timepoint,
) -> Result<(ToyVcpu, BranchCounter, LandStats, u64), LandError> {
    let (mut v, mut bc) = vcpu(prog, skid);
    let mut total = LandStats::default();
    let mut handed_back = 0;
    loop {
        match land(&mut v, &mut bc, t, &LandOptions::with_margin(margin))? {
            LandStep::Landed(s) => {
                total.runs += s.runs;
                total.pmis += s.pmis;
                total.steps += s.steps;
                return Ok((v, bc, total, handed_back));
            }
            LandStep::Exit(e, s) => {
                total.runs += s.runs;
                total.pmis += s.pmis;
                total.steps += s.steps;
                handed_back += 1;
                assert!(
                    matches!(e.reason, ExitReason::IoInstruction | ExitReason::Hlt),
                    "{e:?}"
                );
                v.complete(Completion::Retire).unwrap();
            }
        }
    }
}

/// A random program of counted loops (some with an `out` inside), REP
/// string instructions, forward jumps and straight-line code, ending in a
/// `hlt` and a `jmp $` that runs forever.
fn random_program(rng: &mut ChaCha8Rng) -> Program {
    let mut ops = Vec::new();
    for _ in 0..rng.random_range(2..8) {
        match rng.random_range(0..4) {
            0 => {
                ops.push(Op::MovRcx(rng.random_range(1..60)));
                let top = ops.len();
                for _ in 0..rng.random_range(0..4) {
                    ops.push(Op::Nop);
                }
                if rng.random_bool(0.2) {
                    ops.push(Op::Out(0x80));
                }
                ops.push(Op::Loop(top));
            }
            1 => {
                ops.push(Op::MovRcx(rng.random_range(0..300)));
                ops.push(Op::RepMovsb);
            }
            2 => {
                for _ in 0..rng.random_range(1..6) {
                    let next = ops.len() + 1;
                    ops.push(Op::Jmp(next));
                }
            }
            _ => {
                for _ in 0..rng.random_range(1..5) {
                    ops.push(Op::Nop);
                }
            }
        }
    }
    ops.push(Op::MovRcx(rng.random_range(0..1000)));
    ops.push(Op::Hlt);
    let here = ops.len();
    ops.push(Op::Jmp(here));
    Program::new(ops)
}

fn check_landed(v: &ToyVcpu, bc: &BranchCounter, t: &Timepoint, what: &str) {
    let r = v.regs().unwrap();
    assert_eq!(
        (v.retired().unwrap().branches, r.rip, r.rcx),
        (t.branches, t.rip, t.rcx),
        "{what}"
    );
    assert!(!v.controls().monitor_trap_flag, "MTF left on ({what})");
    assert_eq!(bc.armed_at(), None, "counter left armed ({what})");
}

#[test]
fn seeded_random_targets_land_exactly_with_skid_0_1_64_128() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xCA5_0007);
    let skids = [0u32, 1, 64, 128];
    let mut landed = [0u64; 4];
    let mut steps = [0u64; 4];
    let mut baseline_steps = 0u64;
    let mut handed_back = 0u64;
    for p in 0..60 {
        let prog = random_program(&mut rng);
        let tr = trace(&prog, 4_000);
        for _ in 0..20 {
            let i = rng.random_range(0..tr.len());
            let t = tr[i];
            baseline_steps += i as u64;
            for (k, &skid) in skids.iter().enumerate() {
                let (mut v, bc, s, h) = land_on(&prog, skid, skid as u64, &t)
                    .unwrap_or_else(|e| panic!("program {p} target {t:?} skid {skid}: {e}"));
                check_landed(&v, &bc, &t, &format!("program {p} skid {skid}"));
                assert_eq!(
                    bc.total(v.host_pmu().unwrap()).unwrap(),
                    t.branches,
                    "PMU total agrees with the exact count"
                );
                landed[k] += 1;
                steps[k] += s.steps;
                handed_back += h;
            }
        }
    }
    for (k, skid) in skids.iter().enumerate() {
        println!(
            "skid {skid:3}: {} landed exactly, {:.1} single steps per landing \
             (baseline, stepping from reset: {:.1})",
            landed[k],
            steps[k] as f64 / landed[k] as f64,
            baseline_steps as f64 / landed[k] as f64
        );
    }
    println!("{handed_back} I/O or HLT exits handed back and resumed");
    assert_eq!(landed, [1200; 4]);
    assert!(
        handed_back > 0,
        "the programs contain out/hlt: some must be handed back"
    );
}

#[test]
fn targets_inside_rep_string_instructions_land_on_the_right_iteration() {
    let prog = Program::new(vec![
        Op::MovRcx(5000),
        Op::RepMovsb,
        Op::MovRcx(3),
        Op::Loop(3),
        Op::MovRcx(777),
        Op::RepMovsb,
        Op::Jmp(6),
    ]);
    let tr = trace(&prog, 6_000);
    let rep_rip = prog.rip(1);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut n = 0;
    for _ in 0..500 {
        let t = tr[rng.random_range(0..tr.len())];
        for skid in [0u32, 1, 64, 128] {
            let (v, bc, _, _) = land_on(&prog, skid, skid as u64, &t).unwrap();
            check_landed(&v, &bc, &t, "rep");
        }
        n += (t.rip == rep_rip) as u32;
    }
    assert!(
        n > 300,
        "most targets fall inside the 5000-iteration REP ({n})"
    );
}

#[test]
fn targets_in_a_tight_jmp_self_loop_land_on_the_right_iteration() {
    // mov rcx, 42 ; jmp $  — every iteration has the same rip and rcx.
    let prog = Program::new(vec![Op::MovRcx(42), Op::Jmp(1)]);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for _ in 0..500 {
        let t = Timepoint {
            vcpu: 0,
            branches: rng.random_range(0..200_000),
            rip: prog.rip(1),
            rcx: 42,
        };
        for skid in [0u32, 1, 64, 128] {
            let (v, bc, s, _) = land_on(&prog, skid, skid as u64, &t).unwrap();
            check_landed(&v, &bc, &t, "jmp $");
            assert!(s.steps <= skid as u64 + 2, "{s:?} for skid {skid}");
        }
    }
}

#[test]
fn a_margin_below_the_skid_is_reported_as_an_overshoot() {
    let prog = Program::new(vec![Op::MovRcx(1), Op::Jmp(1)]);
    let t = Timepoint {
        vcpu: 0,
        branches: 10_000,
        rip: prog.rip(1),
        rcx: 1,
    };
    match land_on(&prog, 64, 10, &t) {
        Err(LandError::Overshoot { reached, phase, .. }) => {
            assert_eq!(phase, Phase::FreeRun);
            assert_eq!(reached.branches, 10_000 - 10 + 64);
        }
        other => panic!("expected an overshoot, got {:?}", other.map(|r| r.2)),
    }
    // With the margin at the skid it lands.
    assert!(land_on(&prog, 64, 64, &t).is_ok());
}

#[test]
fn a_target_never_passed_through_is_a_divergence() {
    let prog = Program::new(vec![Op::MovRcx(50), Op::RepMovsb, Op::Nop, Op::Jmp(2)]);
    // During the REP rcx counts 50..1 at rip(1) with 0 branches: rcx 60
    // never happens, and rip(1) with 1 branch neither.
    for (bad, expect_phase) in [
        (
            Timepoint {
                vcpu: 0,
                branches: 0,
                rip: prog.rip(1),
                rcx: 60,
            },
            Phase::Stepping,
        ),
        (
            Timepoint {
                vcpu: 0,
                branches: 1,
                rip: prog.rip(1),
                rcx: 10,
            },
            // Armed at branch 1, the PMI already leaves the vCPU past it.
            Phase::FreeRun,
        ),
    ] {
        match land_on(&prog, 0, 0, &bad) {
            Err(LandError::Overshoot { phase, reached, .. }) => {
                assert_eq!(phase, expect_phase);
                assert!(reached > bad);
            }
            other => panic!(
                "expected a divergence for {bad:?}, got {:?}",
                other.map(|r| r.2)
            ),
        }
    }
    // Landing on a point the vCPU has already passed.
    let (mut v, mut bc, _, _) = land_on(
        &prog,
        0,
        0,
        &Timepoint {
            vcpu: 0,
            branches: 5,
            rip: prog.rip(3),
            rcx: 0,
        },
    )
    .unwrap();
    let earlier = Timepoint {
        vcpu: 0,
        branches: 2,
        rip: prog.rip(2),
        rcx: 0,
    };
    assert!(matches!(
        land(&mut v, &mut bc, &earlier, &LandOptions::with_margin(0)),
        Err(LandError::Overshoot {
            phase: Phase::Start,
            ..
        })
    ));
}

#[test]
fn a_huge_straight_line_run_hits_the_step_guard() {
    let prog = Program::new(vec![Op::MovRcx(1 << 40), Op::RepMovsb, Op::Jmp(2)]);
    let (mut v, mut bc) = vcpu(&prog, 0);
    let t = Timepoint {
        vcpu: 0,
        branches: 0,
        rip: prog.rip(1),
        rcx: 1,
    };
    let opts = LandOptions {
        margin: 0,
        max_steps: 1_000,
    };
    match land(&mut v, &mut bc, &t, &opts) {
        Err(LandError::StepLimit { steps, now, .. }) => {
            assert_eq!(steps, 1_000);
            assert_eq!(now.rcx, (1 << 40) - 999);
        }
        other => panic!("{other:?}"),
    }
    assert!(!v.controls().monitor_trap_flag);
}

/// Timepoints come from a log a guest influenced: arbitrary values must
/// end in a landing, an overshoot, or a vCPU error — never a panic.
#[test]
fn arbitrary_targets_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD_7A26);
    let mut outcomes = [0u32; 3];
    for _ in 0..2_000 {
        // A program that halts and then runs off its end (an error exit).
        let mut ops = vec![Op::MovRcx(rng.random_range(0..50)), Op::RepMovsb];
        ops.push(Op::MovRcx(rng.random_range(1..30)));
        ops.push(Op::Loop(3));
        ops.push(Op::Hlt);
        let prog = Program::new(ops);
        let t = Timepoint {
            vcpu: rng.random(),
            branches: if rng.random_bool(0.5) {
                rng.random_range(0..40)
            } else {
                rng.random()
            },
            rip: if rng.random_bool(0.5) {
                prog.rip(rng.random_range(0..5))
            } else {
                rng.random()
            },
            rcx: if rng.random_bool(0.5) {
                rng.random_range(0..50)
            } else {
                rng.random()
            },
        };
        let skid = rng.random_range(0..4);
        let (mut v, mut bc) = vcpu(&prog, skid);
        let opts = LandOptions {
            margin: rng.random_range(0..8),
            max_steps: 10_000,
        };
        let mut exits = 0;
        let r = loop {
            match land(&mut v, &mut bc, &t, &opts) {
                Ok(LandStep::Exit(_, _)) if exits < 10 => {
                    exits += 1;
                    if v.complete(Completion::Retire).is_err() {
                        break None;
                    }
                }
                Ok(LandStep::Exit(_, _)) => break None,
                other => break Some(other),
            }
        };
        match r {
            Some(Ok(LandStep::Landed(_))) => {
                let regs = v.regs().unwrap();
                assert_eq!((regs.rip, regs.rcx), (t.rip, t.rcx));
                outcomes[0] += 1;
            }
            Some(Err(LandError::Overshoot { .. } | LandError::StepLimit { .. })) => {
                outcomes[1] += 1
            }
            Some(Err(LandError::Vcpu(_))) | None => outcomes[2] += 1,
            Some(other) => panic!("{other:?}"),
        }
    }
    println!(
        "landed {}, overshoot/limit {}, vCPU error or gave up {}",
        outcomes[0], outcomes[1], outcomes[2]
    );
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
