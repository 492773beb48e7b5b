//! The perf_event backend against the real kernel. Hardware checks run only
//! where the probe finds a hardware PMU and print "skipped: <reason>"
//! otherwise; the software-event checks exercise the same open / arm /
//! signal / count code on every Linux host.

use std::time::Duration;

use pmu_driver::perf::{
    self, Cause, Check, CounterSpec, OverflowSignal, PerfCounter, PerfEvent, Target,
};

/// A software page-fault counter, or `None` (after printing why) where this
/// host refuses perf_event_open altogether (e.g. a container's seccomp
/// profile).
fn page_fault_counter() -> Option<PerfCounter> {
    match PerfCounter::open(&CounterSpec {
        event: PerfEvent::SoftwarePageFaults,
        target: Target::CallingThread,
        guest_only: false,
        exclude_kernel: true,
        armable: true,
    }) {
        Ok(c) => Some(c),
        Err(e) => {
            println!("skipped: software perf events unavailable: {e}");
            None
        }
    }
}

#[test]
fn probe_reports_every_step_and_explains_failures() {
    let p = perf::probe();
    println!("{p:#?}\nverdict: {}", p.verdict());
    if let Check::Fails { error, .. } = &p.software_events {
        // No perf at all: every step must say so, none may claim success.
        println!("skipped: software perf events unavailable: {error}");
        assert!(!p.guest_counting_usable());
        assert!(!p.software_overflow_signal.works());
        return;
    }
    assert!(p.software_events.works(), "{}", p.software_events);
    assert!(
        p.software_overflow_signal.works(),
        "{}",
        p.software_overflow_signal
    );
    // Either hardware branch counting works, or the failure is explained by
    // an errno with its meaning: never a silent "no".
    match &p.host_user_branches {
        Check::Works(s) => assert!(s.contains("branches"), "{s}"),
        Check::Fails { error, cause } => {
            assert_ne!(error.errno_name(), "E?", "{error}");
            assert!(!p.guest_counting_usable());
            assert!(p.verdict().contains(error.errno_name()), "{}", p.verdict());
            if *cause == Cause::NoHardwareEvent {
                assert!(p.verdict().contains("no hardware PMU"), "{}", p.verdict());
                assert!(
                    matches!(p.hardware_overflow_signal, Check::NotTried(_)),
                    "{}",
                    p.hardware_overflow_signal
                );
            }
        }
        other => panic!("unexpected {other}"),
    }
}

/// The overflow signal arrives once the armed number of events has happened
/// and not before: exact with page faults, one per fresh page.
#[test]
fn armed_counter_signals_after_exactly_the_period() {
    std::thread::spawn(|| {
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap();
        let Some(c) = page_fault_counter() else {
            return;
        };
        c.signal_overflow_to(&sig).unwrap();
        c.enable().unwrap();
        // Warm up everything this thread touches (stack, libc paths) so that
        // the only faults from here on are the pages we touch.
        assert!(perf::touch_fresh_pages(4));
        assert_eq!(sig.poll(Duration::ZERO).unwrap(), None, "idle period fired");
        let period = 20;
        c.arm(period).unwrap();
        let start = c.count().unwrap();
        let mut prev = 0;
        for i in 1..=3 * period {
            assert!(perf::touch_fresh_pages(1));
            let counted = c.count().unwrap() - start;
            // A fault of our own may sneak in; the signal must follow the
            // count, whatever it is: one per multiple of the period crossed.
            let crossed = counted / period > prev / period;
            prev = counted;
            let wait = if crossed {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            let notice = sig.poll(wait).unwrap();
            if crossed {
                let n = notice.unwrap_or_else(|| panic!("no signal at count {counted} (i={i})"));
                assert_eq!(n.fd, std::os::fd::AsRawFd::as_raw_fd(&c));
                assert_eq!(n.code, perf::POLL_IN);
            } else {
                assert_eq!(notice, None, "signal at count {counted}, period {period}");
            }
        }
        assert!(prev >= 3 * period);
        // Disarmed, the counter keeps counting without signals.
        c.disarm().unwrap();
        let before = c.count().unwrap();
        assert!(perf::touch_fresh_pages(2 * period as usize));
        assert!(c.count().unwrap() >= before + 2 * period);
        assert_eq!(sig.poll(Duration::from_millis(50)).unwrap(), None);
    })
    .join()
    .unwrap();
}

#[test]
fn counter_counts_only_while_enabled_and_resets() {
    let Some(c) = page_fault_counter() else {
        return;
    };
    assert!(perf::touch_fresh_pages(8));
    assert_eq!(c.count().unwrap(), 0, "disabled at open");
    c.enable().unwrap();
    assert!(perf::touch_fresh_pages(8));
    c.disable().unwrap();
    let n = c.count().unwrap();
    assert!((8..16).contains(&n), "{n}");
    assert!(perf::touch_fresh_pages(8));
    assert_eq!(c.count().unwrap(), n, "frozen while disabled");
    c.reset().unwrap();
    assert_eq!(c.count().unwrap(), 0);
}

#[test]
fn poll_from_another_thread_is_refused() {
    let sig = std::thread::spawn(|| {
        OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap()
    })
    .join()
    .unwrap();
    let e = sig.poll(Duration::ZERO).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
}

#[test]
fn hardware_branch_counter_counts_a_loop() {
    let c = match PerfCounter::open(&CounterSpec::host_user_branches()) {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    c.enable().unwrap();
    perf::branchy_loop(1_000_000);
    c.disable().unwrap();
    let n = c.count().unwrap();
    assert!(n >= 1_000_000, "{n} branches for a 1e6-iteration loop");
}

#[test]
fn hardware_branch_overflow_signal_follows_the_period() {
    std::thread::spawn(|| {
        let spec = CounterSpec {
            armable: true,
            ..CounterSpec::host_user_branches()
        };
        let c = match PerfCounter::open(&spec) {
            Ok(c) => c,
            Err(e) => {
                println!("skipped: {e}");
                return;
            }
        };
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap();
        c.signal_overflow_to(&sig).unwrap();
        c.arm(10_000_000).unwrap();
        c.enable().unwrap();
        perf::branchy_loop(1_000);
        assert_eq!(sig.poll(Duration::ZERO).unwrap(), None, "far period fired");
        perf::branchy_loop(20_000_000);
        c.disable().unwrap();
        assert!(sig.poll(Duration::from_secs(2)).unwrap().is_some());
    })
    .join()
    .unwrap();
}

/// The driver's BranchCounter on the perf-backed register bank: the armed
/// overflow arrives as the thread's signal exactly when the (page-fault
/// standing in for branch) count reaches the armed total.
#[test]
fn branch_counter_over_a_perf_bank_signals_at_the_armed_total() {
    use pmu_driver::arch::{IntelPmu, Rings};
    use pmu_driver::perf::PerfBank;
    use pmu_driver::{BranchCounter, Overflow};

    std::thread::spawn(|| {
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap();
        let Some(c) = page_fault_counter() else {
            return;
        };
        let mut bank = PerfBank::new(c).unwrap();
        bank.counter().signal_overflow_to(&sig).unwrap();
        let pmu = IntelPmu::detect(&mut bank).unwrap();
        assert!(pmu.full_width_writes());
        assert_eq!(pmu.caps().gp_counters, 1);
        let user = Rings {
            user: true,
            kernel: false,
        };
        // OS counting cannot be honoured by an exclude_kernel counter.
        assert!(BranchCounter::start(&mut bank, pmu, 0, Rings::ALL, 0).is_err());
        let mut bc = BranchCounter::start(&mut bank, pmu, 0, user, 1_000).unwrap();
        assert!(perf::touch_fresh_pages(4));
        let t0 = bc.total(&mut bank).unwrap();
        assert!(t0 >= 1_004, "{t0}");
        let at = t0 + 30;
        bc.arm_at(&mut bank, at).unwrap();
        let mut signalled_at = None;
        for _ in 0..60 {
            assert!(perf::touch_fresh_pages(1));
            let total = bc.total(&mut bank).unwrap();
            let wait = if total >= at {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            if sig.poll(wait).unwrap().is_some() {
                assert!(total >= at, "signal at {total}, armed at {at}");
                signalled_at = Some(total);
                break;
            }
            assert!(total < at, "no signal at {total}, armed at {at}");
        }
        let s = signalled_at.expect("signal");
        assert!(matches!(
            bc.poll_overflow(&mut bank).unwrap(),
            Overflow::Reached { total } if total >= s
        ));
        // Disarmed after reaching: no more signals, counting goes on.
        assert!(perf::touch_fresh_pages(40));
        assert_eq!(sig.poll(Duration::from_millis(50)).unwrap(), None);
        assert!(bc.total(&mut bank).unwrap() >= s + 40);
        // Context save/restore through the bank.
        let ctx = bc.save(&mut bank).unwrap();
        assert!(perf::touch_fresh_pages(10));
        let mut bc = BranchCounter::restore(&mut bank, pmu, 0, &ctx).unwrap();
        assert_eq!(
            bc.total(&mut bank).unwrap(),
            ctx.total,
            "not counted while saved"
        );
        bc.arm_at(&mut bank, ctx.total + 5).unwrap();
        assert!(perf::touch_fresh_pages(8));
        assert!(sig.poll(Duration::from_secs(2)).unwrap().is_some());
    })
    .join()
    .unwrap();
}
