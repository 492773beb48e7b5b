//! The perf_event backend against the real kernel. Hardware checks run only
//! where the probe finds a hardware PMU and print "skipped: <reason>"
//! otherwise; the software-event checks exercise the same open / arm /
//! signal / count code on every Linux host.

use std::time::Duration;

use pmu_driver::perf::{
    self, Cause, Check, CounterSpec, OverflowSignal, PerfCounter, PerfEvent, Target,
};

fn page_fault_counter() -> PerfCounter {
    PerfCounter::open(&CounterSpec {
        event: PerfEvent::SoftwarePageFaults,
        target: Target::CallingThread,
        guest_only: false,
        exclude_kernel: true,
        armable: true,
    })
    .expect("software page-fault counter")
}

#[test]
fn probe_reports_every_step_and_explains_failures() {
    let p = perf::probe();
    println!("{p:#?}\nverdict: {}", p.verdict());
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
        let c = page_fault_counter();
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
    let c = page_fault_counter();
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
