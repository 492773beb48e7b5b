//! A small libtest-style runner for end-to-end tests declared with
//! `harness = false`: tests whose binary is also re-executed as a domain
//! process by the runtime, so `main` must first hand over to
//! `motion_runtime::run_domain_if_requested` and only then run tests.
//!
//! Output follows libtest's lines (`test NAME ... ok`, `test result: ...`) so
//! CI logs read the same as for ordinary tests.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

/// One test: a name and a function of the shared context.
pub type Test<C> = (&'static str, fn(&C));

/// Run `tests` against `ctx`, filtered by the command-line arguments that do
/// not start with `-` (a test runs when its name contains any of them).
/// `skip(name)` returns the reason to skip a test on this host, printed as
/// `ignored (skipped: REASON)` and counted as ignored, never as passed.
pub fn run<C>(ctx: &C, tests: &[Test<C>], skip: impl Fn(&str) -> Option<String>) -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut filtered, mut ignored) = (0, 0, 0, 0);
    println!();
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        if let Some(why) = skip(name) {
            println!("test {name} ... ignored (skipped: {why})");
            ignored += 1;
            continue;
        }
        let t0 = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| test(ctx))) {
            Ok(()) => {
                println!("test {name} ... ok ({:.2}s)", t0.elapsed().as_secs_f64());
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!();
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "test result: {verdict}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered} filtered out"
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
