//! The Intel architectural PMU driver against the register-level model:
//! programming, overflow with skid, 48-bit wrap-around, status clearing, and
//! a vCPU's counter context moving between two simulated cores.

use pmu_driver::arch::{ArchEvent, CounterConfig, IntelPmu, Rings};
use pmu_driver::model::{Retired, SimConfig, SimCore, SimMachine};
use pmu_driver::{BranchCounter, DriverError, Overflow};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vcpu::pmu::{evtsel, msr};
use vcpu::{PmuBank, PmuError};

const BR: Retired = Retired {
    branch: true,
    cpl: 0,
};
const NOBR: Retired = Retired {
    branch: false,
    cpl: 0,
};

fn core(skid: u32) -> SimCore {
    SimCore::new(SimConfig {
        skid,
        ..SimConfig::default()
    })
}

fn branches(cfg_pmi: bool) -> CounterConfig {
    CounterConfig {
        event: ArchEvent::BranchesRetired,
        rings: Rings::ALL,
        pmi: cfg_pmi,
    }
}

#[test]
fn detects_version_counters_width_and_write_width() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    assert_eq!(pmu.caps().version, 2);
    assert_eq!(pmu.caps().gp_counters, 4);
    assert_eq!(pmu.caps().gp_width, 48);
    assert!(!pmu.full_width_writes());
    assert_eq!(pmu.max_arm_distance(), 1 << 31);
    let mut fw = SimCore::new(SimConfig {
        full_width_writes: true,
        ..SimConfig::default()
    });
    let pmu = IntelPmu::detect(&mut fw).unwrap();
    assert!(pmu.full_width_writes());
    assert_eq!(pmu.max_arm_distance(), (1 << 48) - 1);
}

#[test]
fn programming_writes_the_sdm_bits_and_reserved_bits_fault() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    pmu.program(&mut c, 2, Some(branches(true))).unwrap();
    let v = c.rdmsr(msr::IA32_PERFEVTSEL0 + 2).unwrap();
    assert_eq!(
        v,
        0xC4 | evtsel::USR | evtsel::OS | evtsel::INT | evtsel::EN
    );
    assert_eq!(v, 0x53_00C4);
    let user_only = CounterConfig {
        rings: Rings {
            user: true,
            kernel: false,
        },
        ..branches(false)
    };
    assert_eq!(user_only.evtsel(), 0x41_00C4);
    assert_eq!(
        pmu.program(&mut c, 4, None),
        Err(DriverError::NoSuchCounter { index: 4, count: 4 })
    );
    // AnyThread (bit 21) is reserved in version 2; so is everything above 31.
    for bad in [1u64 << 21, 1 << 32, 1 << 63] {
        assert_eq!(
            c.wrmsr(msr::IA32_PERFEVTSEL0, 0xC4 | bad),
            Err(PmuError::Reserved {
                msr: msr::IA32_PERFEVTSEL0,
                value: 0xC4 | bad
            })
        );
    }
    assert!(
        c.wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1 << 4).is_err(),
        "no counter 4"
    );
    assert!(
        c.wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1 << 32).is_err(),
        "no fixed counters"
    );
    assert!(
        c.wrmsr(msr::IA32_PERF_GLOBAL_STATUS, 0).is_err(),
        "read-only"
    );
    assert_eq!(c.rdmsr(0x4C1), Err(PmuError::NoSuchMsr(0x4C1)));
    assert_eq!(c.rdmsr(msr::IA32_PMC0 + 4), Err(PmuError::NoSuchMsr(0xC5)));
}

#[test]
fn counts_only_matching_enabled_events_in_the_chosen_rings() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    let user = Retired {
        branch: true,
        cpl: 3,
    };
    pmu.program(&mut c, 0, Some(branches(false))).unwrap();
    pmu.program(
        &mut c,
        1,
        Some(CounterConfig {
            rings: Rings {
                user: true,
                kernel: false,
            },
            ..branches(false)
        }),
    )
    .unwrap();
    pmu.program(
        &mut c,
        2,
        Some(CounterConfig {
            event: ArchEvent::InstructionsRetired,
            ..branches(false)
        }),
    )
    .unwrap();
    for r in [BR, NOBR, user, BR] {
        c.retire(r);
    }
    assert_eq!(pmu.read_counter(&mut c, 0).unwrap(), 3);
    assert_eq!(pmu.read_counter(&mut c, 1).unwrap(), 1, "USR only");
    assert_eq!(pmu.read_counter(&mut c, 2).unwrap(), 4, "C0H counts all");
    assert_eq!(pmu.read_counter(&mut c, 3).unwrap(), 0, "not programmed");
    // Frozen while disabled in GLOBAL_CTRL, resumes when re-enabled.
    pmu.set_enabled(&mut c, 0, false).unwrap();
    c.retire(BR);
    assert_eq!(pmu.read_counter(&mut c, 0).unwrap(), 3);
    assert_eq!(pmu.read_counter(&mut c, 1).unwrap(), 1);
    pmu.set_enabled(&mut c, 0, true).unwrap();
    c.retire(BR);
    assert_eq!(pmu.read_counter(&mut c, 0).unwrap(), 4);
}

#[test]
fn pmc_writes_sign_extend_bit_31_and_the_driver_respects_it() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    c.wrmsr(msr::IA32_PMC0, 0x8000_0000).unwrap();
    assert_eq!(c.rdmsr(msr::IA32_PMC0).unwrap(), 0xffff_8000_0000);
    c.wrmsr(msr::IA32_PMC0, 0x1234_7fff_ffff).unwrap();
    assert_eq!(c.rdmsr(msr::IA32_PMC0).unwrap(), 0x7fff_ffff, "EDX ignored");
    assert_eq!(pmu.arm_value(1 << 31).unwrap(), 0xffff_8000_0000);
    assert!(matches!(
        pmu.arm_value((1 << 31) + 1),
        Err(DriverError::ArmDistance { .. })
    ));
    assert!(matches!(
        pmu.arm_value(0),
        Err(DriverError::ArmDistance { .. })
    ));
    assert!(pmu.write_counter(&mut c, 0, 0x1_0000_0000).is_err());
    pmu.write_counter(&mut c, 0, 0xffff_ffff_fff0).unwrap();

    let mut fw = SimCore::new(SimConfig {
        full_width_writes: true,
        ..SimConfig::default()
    });
    let pmu = IntelPmu::detect(&mut fw).unwrap();
    pmu.write_counter(&mut fw, 1, 0x1_0000_0000).unwrap();
    assert_eq!(pmu.read_counter(&mut fw, 1).unwrap(), 0x1_0000_0000);
    assert!(fw.wrmsr(0x4C1, 1 << 48).is_err(), "beyond 48 bits");
}

#[test]
fn overflow_sets_status_and_signals_the_pmi_after_the_skid() {
    for skid in [0u32, 1, 2, 64, 128] {
        let mut c = core(skid);
        let pmu = IntelPmu::detect(&mut c).unwrap();
        pmu.program(&mut c, 1, Some(branches(true))).unwrap();
        pmu.write_counter(&mut c, 1, pmu.arm_value(10).unwrap())
            .unwrap();
        for i in 1..10 {
            assert!(!c.retire(BR), "PMI after {i} of 10 (skid {skid})");
        }
        assert_eq!(pmu.overflow_status(&mut c).unwrap(), 0);
        let fired = c.retire(BR);
        assert_eq!(
            pmu.overflow_status(&mut c).unwrap(),
            0b10,
            "status at the 10th"
        );
        assert_eq!(pmu.read_counter(&mut c, 1).unwrap(), 0, "wrapped to 0");
        assert_eq!(fired, skid == 0);
        let mut after = 0;
        if !fired {
            loop {
                after += 1;
                // Skid counts instructions, branches or not.
                if c.retire(if after % 2 == 0 { BR } else { NOBR }) {
                    break;
                }
                assert!(after < 1000);
            }
        }
        assert_eq!(after, skid, "PMI {after} instructions late, skid {skid}");
        assert_eq!(c.pmis(), 1);
        // OVF_CTRL clears only the bits written.
        pmu.program(&mut c, 0, Some(branches(false))).unwrap();
        pmu.write_counter(&mut c, 0, pmu.arm_value(1).unwrap())
            .unwrap();
        c.retire(BR);
        assert_eq!(pmu.overflow_status(&mut c).unwrap(), 0b11);
        pmu.clear_overflow(&mut c, 0b10).unwrap();
        assert_eq!(pmu.overflow_status(&mut c).unwrap(), 0b01);
        assert!(c.wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, 1 << 40).is_err());
        c.wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, 3 << 62 | 1)
            .unwrap();
        assert_eq!(pmu.overflow_status(&mut c).unwrap(), 0);
    }
}

#[test]
fn counters_wrap_at_48_bits() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    pmu.program(&mut c, 0, Some(branches(false))).unwrap();
    pmu.write_counter(&mut c, 0, 0xffff_ffff_fffe).unwrap();
    c.retire(BR);
    assert_eq!(pmu.read_counter(&mut c, 0).unwrap(), 0xffff_ffff_ffff);
    assert_eq!(pmu.overflow_status(&mut c).unwrap(), 0);
    c.retire(BR);
    c.retire(BR);
    assert_eq!(pmu.read_counter(&mut c, 0).unwrap(), 1);
    assert_eq!(pmu.overflow_status(&mut c).unwrap(), 1);
    assert_eq!(pmu.events_between(0xffff_ffff_fffe, 1), 3);
}

#[test]
fn branch_counter_keeps_a_64_bit_total_across_long_arms_and_wraps() {
    let mut c = core(0);
    let pmu = IntelPmu::detect(&mut c).unwrap();
    let mut bc = BranchCounter::start(&mut c, pmu, 0, Rings::ALL, 1_000).unwrap();
    assert_eq!(bc.total(&mut c).unwrap(), 1_000);
    // Armed 5 * 2^31 ahead: four intermediate overflows are re-armed
    // silently, the fifth is the one.
    let at = 1_000 + 5 * (1u64 << 31) + 7;
    bc.arm_at(&mut c, at).unwrap();
    let mut intermediate = 0;
    let mut done = 1_000;
    loop {
        let (n, pmi) = c.retire_many(BR, u64::MAX);
        done += n;
        assert!(pmi);
        match bc.poll_overflow(&mut c).unwrap() {
            Overflow::Reached { total } => {
                assert_eq!(total, at);
                assert_eq!(done, at);
                break;
            }
            Overflow::NotYet => intermediate += 1,
        }
    }
    assert_eq!(intermediate, 5, "ceil((at - 1000) / 2^31) - 1 = 5");
    // Disarmed once reached: counting on without PMIs, through a wrap of
    // the idle counter (2^31 per idle load).
    let (n, pmi) = c.retire_many(BR, 3 * (1 << 31));
    assert_eq!(n, 3 * (1 << 31));
    assert!(!pmi);
    bc.poll_overflow(&mut c).unwrap();
    assert_eq!(bc.total(&mut c).unwrap(), at + 3 * (1 << 31));
    assert!(matches!(
        bc.arm_at(&mut c, 5),
        Err(DriverError::ArmInPast { at: 5, .. })
    ));
}

/// A vCPU's counter moves between two cores: counts and the armed point
/// survive, the old core stops counting for it, and the other vCPU that
/// shares the cores is undisturbed.
#[test]
fn context_save_restore_across_two_cores() {
    for skid in [0u32, 3] {
        let mut m = SimMachine::new(
            2,
            SimConfig {
                skid,
                ..SimConfig::default()
            },
        );
        let pmu = IntelPmu::detect(&mut m.cores[0]).unwrap();
        // vCPU A on core 0, vCPU B on core 1, both on counter 0.
        let mut a = BranchCounter::start(&mut m.cores[0], pmu, 0, Rings::ALL, 0).unwrap();
        let mut b = BranchCounter::start(&mut m.cores[1], pmu, 0, Rings::ALL, 500).unwrap();
        a.arm_at(&mut m.cores[0], 1_000).unwrap();
        b.arm_at(&mut m.cores[1], 800).unwrap();
        assert_eq!(m.cores[0].retire_many(BR, 600), (600, false));
        assert_eq!(m.cores[1].retire_many(BR, 200), (200, false));
        // Swap: save both, restore crosswise (B on counter 2 of core 0).
        let ctx_a = a.save(&mut m.cores[0]).unwrap();
        let ctx_b = b.save(&mut m.cores[1]).unwrap();
        assert_eq!((ctx_a.total, ctx_a.armed_at), (600, Some(1_000)));
        assert_eq!((ctx_b.total, ctx_b.armed_at), (700, Some(800)));
        assert_eq!(
            m.cores[0].rdmsr(msr::IA32_PERFEVTSEL0).unwrap(),
            0,
            "left clean"
        );
        let mut a = BranchCounter::restore(&mut m.cores[1], pmu, 0, &ctx_a).unwrap();
        let mut b = BranchCounter::restore(&mut m.cores[0], pmu, 2, &ctx_b).unwrap();
        // B reaches 800 on core 0 after exactly 100 more branches (+ skid).
        let (n, pmi) = m.cores[0].retire_many(BR, u64::MAX);
        assert!(pmi);
        assert_eq!(n, 100 + skid as u64);
        assert_eq!(
            b.poll_overflow(&mut m.cores[0]).unwrap(),
            Overflow::Reached {
                total: 800 + skid as u64
            }
        );
        // A reaches 1000 on core 1 after exactly 400.
        let (n, pmi) = m.cores[1].retire_many(BR, u64::MAX);
        assert!(pmi);
        assert_eq!(n, 400 + skid as u64);
        assert!(matches!(
            a.poll_overflow(&mut m.cores[1]).unwrap(),
            Overflow::Reached { total } if total == 1_000 + skid as u64
        ));
        assert_eq!(a.total(&mut m.cores[1]).unwrap(), 1_000 + skid as u64);
        assert_eq!(b.total(&mut m.cores[0]).unwrap(), 800 + skid as u64);
    }
}

/// An overflow that happened on the old core, its PMI still in the skid
/// window when the vCPU moved, is reported on the new core.
#[test]
fn overflow_pending_at_migration_is_reported_after_restore() {
    let mut m = SimMachine::new(
        2,
        SimConfig {
            skid: 50,
            ..SimConfig::default()
        },
    );
    let pmu = IntelPmu::detect(&mut m.cores[0]).unwrap();
    let mut a = BranchCounter::start(&mut m.cores[0], pmu, 1, Rings::ALL, 0).unwrap();
    a.arm_at(&mut m.cores[0], 10).unwrap();
    assert_eq!(
        m.cores[0].retire_many(BR, 12),
        (12, false),
        "overflowed, PMI in flight"
    );
    let ctx = a.save(&mut m.cores[0]).unwrap();
    assert!(ctx.overflow_pending);
    assert_eq!(ctx.armed_at, None);
    let mut a = BranchCounter::restore(&mut m.cores[1], pmu, 1, &ctx).unwrap();
    assert_eq!(
        a.poll_overflow(&mut m.cores[1]).unwrap(),
        Overflow::Reached { total: 12 }
    );
    assert_eq!(a.poll_overflow(&mut m.cores[1]).unwrap(), Overflow::NotYet);
}

/// Random interleavings of arming, running and migrating, checked against
/// a plain count: the total is always exact, every PMI comes exactly `skid`
/// instructions after the armed count is crossed (or is a stray one from an
/// earlier arming, which polling must not mistake for the target), and none
/// comes otherwise.
#[test]
fn random_migrations_keep_exact_totals_and_overflow_points() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EED_0007);
    let (mut reached_pmis, mut stray_pmis, mut moved_pending) = (0, 0, 0);
    for round in 0..300 {
        let skid = [0u32, 1, 64, 128][round % 4];
        let cfg = SimConfig {
            skid,
            full_width_writes: round % 3 == 0,
            ..SimConfig::default()
        };
        let mut m = SimMachine::new(2, cfg);
        let pmu = IntelPmu::detect(&mut m.cores[0]).unwrap();
        let mut on = 0usize;
        let mut truth = rng.random_range(0..1u64 << 40);
        let mut bc = BranchCounter::start(&mut m.cores[on], pmu, 0, Rings::ALL, truth).unwrap();
        let mut armed: Option<u64> = None;
        // Instructions until the PMI in flight on the current core.
        let mut pmi_due: Option<u64> = None;
        for _ in 0..60 {
            match rng.random_range(0..5) {
                0 => {
                    let at = truth + rng.random_range(1..5_000);
                    bc.arm_at(&mut m.cores[on], at).unwrap();
                    armed = Some(at);
                }
                1 => {
                    let ctx = bc.save(&mut m.cores[on]).unwrap();
                    assert_eq!(ctx.total, truth);
                    // A PMI in flight is delivered to the old core after the
                    // vCPU left: the host drops it.
                    if pmi_due.take().is_some() {
                        m.cores[on] = SimCore::new(cfg);
                    }
                    on = 1 - on;
                    let idx = rng.random_range(0..4);
                    bc = BranchCounter::restore(&mut m.cores[on], pmu, idx, &ctx).unwrap();
                    let reached = armed.is_some_and(|a| truth >= a);
                    assert_eq!(ctx.overflow_pending, reached, "round {round}");
                    if reached {
                        assert_eq!(
                            bc.poll_overflow(&mut m.cores[on]).unwrap(),
                            Overflow::Reached { total: truth }
                        );
                        armed = None;
                        moved_pending += 1;
                    }
                }
                _ => {
                    let n = rng.random_range(1..3_000);
                    let branchy = rng.random_bool(0.7);
                    let r = if branchy { BR } else { NOBR };
                    let (done, pmi) = m.cores[on].retire_many(r, n);
                    let mut due = pmi_due;
                    if due.is_none() && branchy {
                        if let Some(at) = armed.filter(|&a| truth < a && truth + n >= a) {
                            due = Some(at - truth + skid as u64);
                        }
                    }
                    let expect = due.filter(|&d| d <= n);
                    assert_eq!(pmi, expect.is_some(), "round {round}, due {due:?}, n {n}");
                    match expect {
                        Some(d) => {
                            assert_eq!(done, d, "PMI position, round {round}");
                            pmi_due = None;
                        }
                        None => pmi_due = due.map(|d| d - done),
                    }
                    if branchy {
                        truth += done;
                    }
                    if pmi {
                        let reached = armed.is_some_and(|a| truth >= a);
                        let got = bc.poll_overflow(&mut m.cores[on]).unwrap();
                        if reached {
                            assert_eq!(got, Overflow::Reached { total: truth });
                            armed = None;
                            reached_pmis += 1;
                        } else {
                            assert_eq!(got, Overflow::NotYet, "stray PMI, round {round}");
                            stray_pmis += 1;
                        }
                    }
                }
            }
            assert_eq!(bc.total(&mut m.cores[on]).unwrap(), truth, "round {round}");
        }
    }
    println!(
        "{reached_pmis} PMIs at the target, {stray_pmis} stray, {moved_pending} carried over a move"
    );
    assert!(reached_pmis > 500 && stray_pmis > 0 && moved_pending > 0);
}
