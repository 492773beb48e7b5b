//! Every IPC decoder's fuzz entry (the functions `components/ipc/fuzz` runs
//! under libFuzzer) over a seeded random corpus in the normal test run: valid
//! frames of every interface, thousands of mutations of them, and random
//! bytes. Any panic fails the test; the seeds must also decode, so the corpus
//! really reaches the payload decoders.

use std::collections::BTreeMap;

use motion_ipc::frame::{self, HEADER_SIZE, Kind};
use motion_ipc::fuzz_entry;
use motion_ipc::server::decode_request;
use motion_ipc::{Interface, MAX_MESSAGE_SIZE, Rejection};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vcpu::{Event, Regs, SpecialRegs, Timepoint};

/// Mutated or random inputs per entry function.
const ROUNDS: usize = 4000;

fn tp(n: u64) -> Timepoint {
    Timepoint {
        vcpu: (n % 3) as u32,
        branches: n * 1000,
        rip: 0xffff_8000_0000_0000 + n,
        rcx: n % 7,
    }
}

/// Call and notify frames of `requests`.
fn server_seeds<I: Interface>(requests: &[I::Request]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        for kind in [Kind::Call, Kind::Notify] {
            let mut buf = Vec::new();
            frame::encode_into(&mut buf, kind, I::ID, i as u32 + 1, r).unwrap();
            let decoded = decode_request::<I>(&buf, buf.len()).expect("a seed decodes");
            assert_eq!(format!("{:?}", decoded.request), format!("{r:?}"));
            out.push(buf);
        }
    }
    out
}

/// Reply frames of `responses` and rejection frames.
fn client_seeds<I: Interface>(responses: &[I::Response]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, r) in responses.iter().enumerate() {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Reply, I::ID, i as u32 + 1, r).unwrap();
        out.push(buf);
    }
    for rejection in [
        Rejection::BadPayload {
            reason: "unexpected end".into(),
        },
        Rejection::WrongInterface {
            expected: I::ID,
            got: 9,
        },
        Rejection::Oversized {
            len: 1 << 20,
            max: MAX_MESSAGE_SIZE as u64,
        },
    ] {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Reject, I::ID, 3, &rejection).unwrap();
        out.push(buf);
    }
    out
}

fn mutate(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                v.insert(i, rng.random());
            }
            3 if len > 0 => {
                v.remove(rng.random_range(0..len));
            }
            4 => v.truncate(rng.random_range(0..=len)),
            // Header fields: kind, interface, payload length.
            5 if len > 3 => v[3] = rng.random_range(0..6),
            6 if len > 5 => v[4..6].copy_from_slice(&rng.random_range(0u16..8).to_le_bytes()),
            7 if len >= HEADER_SIZE => {
                // Keep the declared length consistent so the payload decoder runs.
                let payload = (len - HEADER_SIZE) as u32;
                v[12..16].copy_from_slice(&payload.to_le_bytes());
                if len > HEADER_SIZE {
                    let i = rng.random_range(HEADER_SIZE..len);
                    v[i] = rng.random();
                }
            }
            _ => {
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                v.extend(extra);
            }
        }
    }
    v
}

/// Run `entry` over the seeds, their mutations and random bytes.
fn exercise(name: &str, seed: u64, seeds: &[Vec<u8>], entry: fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for s in seeds {
        entry(s);
    }
    for _ in 0..ROUNDS {
        let input = if rng.random_range(0..4) == 0 {
            let len = rng.random_range(0..200);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let base = &seeds[rng.random_range(0..seeds.len())];
            mutate(&mut rng, base)
        };
        entry(&input);
    }
}

fn exercise_interface<I: Interface>(seed: u64, requests: &[I::Request], responses: &[I::Response]) {
    let server = server_seeds::<I>(requests);
    let client = client_seeds::<I>(responses);
    exercise(I::NAME, seed, &server, fuzz_entry::server_receive::<I>);
    exercise(I::NAME, seed + 1, &client, fuzz_entry::client_receive::<I>);
    // Frames of one side fed to the other, too.
    exercise(I::NAME, seed + 2, &client, fuzz_entry::server_receive::<I>);
    exercise(I::NAME, seed + 3, &server, fuzz_entry::client_receive::<I>);
    let mut all = server;
    all.extend(client);
    exercise(I::NAME, seed + 4, &all, fuzz_entry::frame);
}

#[test]
fn log_append_decoders() {
    use log_append_api::*;
    let records: Vec<Record> = (0..20)
        .map(|i| Record {
            record_type: i as u16,
            timepoint: (i % 3 == 0).then(|| tp(i)),
            payload: vec![i as u8; i as usize * 3],
        })
        .collect();
    let ack = Ack {
        accepted: 10,
        durable: 7,
    };
    exercise_interface::<LogAppend>(
        1,
        &[
            Request::Append {
                records: records.clone(),
            },
            Request::Append { records: vec![] },
            Request::Flush,
            Request::Seal,
        ],
        &[
            Ok(Reply::Appended(ack)),
            Ok(Reply::Flushed(ack)),
            Ok(Reply::Sealed(ack)),
            Err(LogAppendError::Sealed),
            Err(LogAppendError::InvalidRecord {
                index: 3,
                why: "type 0".into(),
            }),
            Err(LogAppendError::Storage {
                what: "ENOSPC".into(),
            }),
        ],
    );
}

#[test]
fn log_read_decoders() {
    use log_read_api::*;
    let record = Record {
        record_type: 7,
        timepoint: Some(tp(9)),
        payload: b"dma".to_vec(),
    };
    exercise_interface::<LogRead>(
        10,
        &[
            Request::Open {
                log: "rec-1".into(),
            },
            Request::Header,
            Request::Read {
                from: 12,
                max_records: 100,
            },
            Request::Seek(SeekTarget::Record(5)),
            Request::Seek(SeekTarget::Timepoint(tp(3))),
            Request::Verify,
        ],
        &[
            Ok(Reply::Opened(LogSummary {
                records: 3,
                sealed: true,
            })),
            Ok(Reply::Header(LogHeader {
                format_version: 1,
                backend: "soft".into(),
                vcpus: 2,
                memory_bytes: 1 << 26,
                guest_image_hash: [7; 32],
                disk_image_hash: Some([9; 32]),
                cpuid_policy: "baseline".into(),
                machine: Box::new(log_store::sample::machine()),
            })),
            Ok(Reply::Records {
                first: 4,
                records: vec![record.clone(), record],
                end: false,
            }),
            Ok(Reply::Position { record: 77 }),
            Ok(Reply::Verified(VerifyReport {
                records: 9,
                first_bad: Some(BadSpot {
                    offset: 4096,
                    block: Some(2),
                    frame: None,
                    what: "crc mismatch".into(),
                }),
            })),
            Err(LogReadError::NotOpen),
            Err(LogReadError::OutOfRange {
                from: 9,
                records: 3,
            }),
            Err(LogReadError::Corrupt {
                offset: 1,
                what: "x".into(),
            }),
        ],
    );
}

#[test]
fn pmu_decoders() {
    use pmu_api::*;
    let counter = CounterRef {
        vcpu: 1,
        counter: 0,
    };
    let config = CounterConfig {
        event: CounterEvent::BranchesRetired,
        user: true,
        kernel: true,
    };
    exercise_interface::<Pmu>(
        20,
        &[
            Request::Capabilities,
            Request::Program { counter, config },
            Request::Arm {
                counter,
                overflow_after: 1_000_000,
            },
            Request::Disarm { counter },
            Request::Read { counter },
            Request::Status { counter },
        ],
        &[
            Ok(Reply::Capabilities(PmuCapabilities {
                source: "soft".into(),
                counters_per_vcpu: 4,
                exact: true,
                skid_margin: 0,
            })),
            Ok(Reply::Programmed),
            Ok(Reply::Armed),
            Ok(Reply::Count(123_456)),
            Ok(Reply::Status(CounterStatus {
                config: Some(config),
                count: 5,
                armed_at: Some(100),
                overflowed: false,
            })),
            Err(PmuError::NotProgrammed {
                vcpu: 1,
                counter: 0,
            }),
            Err(PmuError::Unsupported {
                what: "no PMU".into(),
            }),
        ],
    );
}

#[test]
fn vm_control_decoders() {
    use vm_control_api::*;
    exercise_interface::<VmControl>(
        30,
        &[
            Request::Run {
                until: RunUntil::Timepoint(tp(4)),
            },
            Request::Run {
                until: RunUntil::NextEvent,
            },
            Request::Step {
                vcpu: 0,
                instructions: 1,
            },
            Request::GetRegs { vcpu: 1 },
            Request::Digest,
            Request::Inject {
                vcpu: 0,
                event: Event::ExternalInterrupt(0x20),
            },
            Request::Stop,
        ],
        &[
            Ok(Reply::Stopped(StopInfo {
                reason: StopReason::Divergence {
                    record: 9,
                    what: "rax".into(),
                },
                at: vec![tp(1), tp(2)],
            })),
            Ok(Reply::Registers(Box::new(Registers {
                regs: Regs {
                    rip: 0x1000,
                    rflags: 2,
                    ..Regs::default()
                },
                sregs: SpecialRegs::default(),
            }))),
            Ok(Reply::Digest(VmDigest {
                at: vec![tp(3)],
                registers: [1; 32],
                memory: [2; 32],
            })),
            Ok(Reply::Injected),
            Err(VmControlError::InThePast {
                vcpu: 0,
                target: tp(0),
            }),
            Err(VmControlError::Running),
        ],
    );
}

#[test]
fn supervisor_decoders() {
    use supervisor_api::*;
    exercise_interface::<Supervisor>(
        40,
        &[
            Request::Ping { nonce: 42 },
            Request::Health,
            Request::Shutdown {
                reason: "done".into(),
            },
        ],
        &[
            Ok(Reply::Pong { nonce: 42 }),
            Ok(Reply::Health(DomainHealth {
                domain: "log".into(),
                pid: 77,
                uptime_ms: 1000,
                components: vec![
                    ComponentHealth {
                        name: "log-store".into(),
                        state: ComponentState::Running,
                    },
                    ComponentHealth {
                        name: "x".into(),
                        state: ComponentState::Failed { error: "e".into() },
                    },
                ],
            })),
            Ok(Reply::ShuttingDown),
            Err(SupervisorError::Refused { why: "busy".into() }),
        ],
    );
}

#[test]
fn runtime_boot_and_exit_note_decoders() {
    let seeds = motion_runtime::fuzz_seeds();
    assert!(seeds.len() >= 2);
    exercise("domain_boot", 50, &seeds, motion_runtime::fuzz_boot);
    exercise("exit_note", 51, &seeds, motion_runtime::fuzz_exit_note);
}

#[test]
fn the_fuzz_targets_cover_every_interface() {
    // One server and one client target per interface in components/ipc/fuzz.
    let manifest = include_str!("../components/ipc/fuzz/Cargo.toml");
    let targets: BTreeMap<&str, ()> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .map(|n| (n, ()))
        .collect();
    for name in motion_ipc::INTERFACE_NAMES {
        let snake: String = name
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let lower = c.to_ascii_lowercase();
                if c.is_ascii_uppercase() && i > 0 {
                    vec!['_', lower]
                } else {
                    vec![lower]
                }
            })
            .collect();
        for side in ["server", "client"] {
            let target = format!("{side}_{snake}");
            assert!(
                targets.contains_key(target.as_str()),
                "no fuzz target {target}"
            );
        }
    }
    for t in ["frame", "domain_boot", "exit_note"] {
        assert!(targets.contains_key(t), "no fuzz target {t}");
    }
}
