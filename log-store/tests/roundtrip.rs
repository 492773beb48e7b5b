//! Write, seal, read back, seek, verify, recover.

use log_store::sample;
use log_store::{Durability, LogError, LogReader, LogWriter, Region, WriterConfig};
use motion_records::{Record, RecordType};
use proptest::prelude::*;
use vcpu::Timepoint;

fn config(durability: Durability, block_bytes: usize) -> WriterConfig {
    WriterConfig {
        durability,
        block_bytes,
        ..WriterConfig::default()
    }
}

fn write_log(path: &std::path::Path, records: &[Record], cfg: WriterConfig, seal: bool) {
    let mut w = LogWriter::create(path, &sample::machine(), cfg).unwrap();
    for chunk in records.chunks(37) {
        w.append(chunk).unwrap();
    }
    if seal {
        let s = w.seal().unwrap();
        assert_eq!(s.records, records.len() as u64);
    } else {
        assert_eq!(w.flush().unwrap().durable, records.len() as u64);
    }
}

fn read_all(path: &std::path::Path) -> Vec<Record> {
    let r = LogReader::open(path).unwrap();
    r.records().map(|x| x.unwrap().1).collect()
}

#[test]
fn sealed_log_reads_back_seeks_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let records: Vec<Record> = (0..5000).map(|i| sample::mixed(1, i)).collect();
    write_log(&path, &records, config(Durability::AtSeal, 4096), true);

    let r = LogReader::open(&path).unwrap();
    assert!(r.sealed().is_some());
    assert!(r.blocks().len() > 10, "small blocks expected");
    assert_eq!(r.record_count(), 5000);
    assert_eq!(r.machine(), &sample::machine());
    let got: Vec<Record> = r.records().map(|x| x.unwrap().1).collect();
    assert_eq!(got, records);
    let total: u64 = r.counts().values().sum();
    assert_eq!(total, 5000);
    let ports = records
        .iter()
        .filter(|r| r.record_type() == RecordType::PortIn)
        .count() as u64;
    assert_eq!(r.counts()[&RecordType::PortIn.id()], ports);

    for n in [0, 1, 36, 37, 999, 2500, 4999] {
        let (k, rec) = r.records_from(n).unwrap().next().unwrap().unwrap();
        assert_eq!((k, &rec), (n, &records[n as usize]));
        assert_eq!(r.record(n).unwrap(), records[n as usize]);
    }
    assert_eq!(r.records_from(5000).unwrap().count(), 0);
    assert!(matches!(
        r.records_from(5001),
        Err(LogError::OutOfRange { .. })
    ));

    // Seek by timepoint: the first record of that vCPU at or after it.
    for target in [0u64, 1, 700, 3333, 4998] {
        let tp = *records[target as usize..]
            .iter()
            .find_map(|r| r.timepoint())
            .unwrap();
        let expect = records
            .iter()
            .position(|r| {
                r.timepoint().is_some_and(|t| {
                    t.cmp_same_vcpu(&tp)
                        .is_some_and(|o| o != std::cmp::Ordering::Less)
                })
            })
            .unwrap() as u64;
        assert_eq!(r.find_timepoint(&tp).unwrap(), Some(expect));
        let (k, _) = r.seek_timepoint(&tp).unwrap().next().unwrap().unwrap();
        assert_eq!(k, expect);
    }
    let beyond = Timepoint {
        vcpu: 0,
        branches: u64::MAX,
        rip: 0,
        rcx: 0,
    };
    assert_eq!(r.find_timepoint(&beyond).unwrap(), None);

    let v = r.verify().unwrap();
    assert!(v.is_intact(), "{:?}", v.fault);
    assert!(v.sealed.is_some());
    assert_eq!(v.records, 5000);
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, b"precious").unwrap();
    let e = LogWriter::create(&path, &sample::machine(), WriterConfig::default()).unwrap_err();
    assert!(matches!(e, LogError::Exists(_)));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn unsealed_log_reads_and_recovers_to_append_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let records: Vec<Record> = (0..3000).map(|i| sample::mixed(2, i)).collect();
    write_log(
        &path,
        &records[..2000],
        config(Durability::EveryBatch, 8192),
        false,
    );
    assert_eq!(read_all(&path), records[..2000]);
    assert!(log_store::verify_path(&path).unwrap().is_intact());

    let (mut w, rec) = LogWriter::recover(&path, WriterConfig::default()).unwrap();
    assert_eq!(rec.kept_records, 2000);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(w.ack().durable, 2000);
    w.append(&records[2000..]).unwrap();
    w.seal().unwrap();
    assert_eq!(read_all(&path), records);
    assert!(matches!(
        LogWriter::recover(&path, WriterConfig::default()),
        Err(LogError::Sealed)
    ));
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let records: Vec<Record> = (0..1000).map(|i| sample::mixed(3, i)).collect();
    write_log(
        &path,
        &records[..600],
        config(Durability::EveryBatch, 2048),
        false,
    );
    let good_len = std::fs::metadata(&path).unwrap().len();
    // A block that was half written when the writer died.
    {
        let (mut w, _) = LogWriter::recover(&path, config(Durability::EveryBatch, 2048)).unwrap();
        w.append(&records[600..700]).unwrap();
    }
    let full = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(good_len + (full - good_len) / 2 + 100).unwrap();
    drop(f);

    let v = log_store::verify_path(&path).unwrap();
    let fault = v.fault.clone().unwrap();
    assert!(fault.torn_tail, "{fault}");
    assert!(matches!(fault.region, Region::Block { .. }));
    // The reader reads the intact prefix, then reports the damage.
    let r = LogReader::open(&path).unwrap();
    let items: Vec<_> = r.records().collect();
    assert!(items.last().unwrap().is_err());
    let kept = items.len() as u64 - 1;
    assert!((600..700).contains(&kept), "{kept}");

    let (w, rec) = LogWriter::recover(&path, WriterConfig::default()).unwrap();
    assert_eq!(rec.kept_records, kept);
    assert!(rec.truncated_bytes > 0);
    w.seal().unwrap();
    assert_eq!(read_all(&path), records[..kept as usize]);
}

#[test]
fn damage_that_is_not_a_torn_tail_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let records: Vec<Record> = (0..1000).map(|i| sample::mixed(4, i)).collect();
    write_log(&path, &records, config(Durability::EveryBatch, 2048), false);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = LogWriter::recover(&path, WriterConfig::default()).unwrap_err();
    assert!(matches!(e, LogError::NotATornTail(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn huge_and_oversized_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let mut w =
        LogWriter::create(&path, &sample::machine(), config(Durability::AtSeal, 1024)).unwrap();
    let big = Record::from(motion_records::DmaWrite {
        gpa: 0,
        bytes: vec![0xa5; 3 << 20],
        at: None,
    });
    w.append(&[sample::small(0, 0), big.clone(), sample::small(0, 2)])
        .unwrap();
    let too_big = Record::from(motion_records::DmaWrite {
        gpa: 0,
        bytes: vec![0; 17 << 20],
        at: None,
    });
    assert!(matches!(
        w.append(&[too_big]),
        Err(LogError::RecordTooLarge { .. })
    ));
    assert_eq!(w.ack().appended, 3);
    w.seal().unwrap();
    let got = read_all(&path);
    assert_eq!(got, vec![sample::small(0, 0), big, sample::small(0, 2)]);
}

#[test]
fn interval_policy_acknowledges_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let cfg = config(
        Durability::Interval(std::time::Duration::from_millis(30)),
        1 << 16,
    );
    let mut w = LogWriter::create(&path, &sample::machine(), cfg).unwrap();
    let ack = w.append(&[sample::small(0, 0)]).unwrap();
    assert_eq!((ack.appended, ack.durable), (1, 0));
    assert!(w.next_deadline().is_some());
    std::thread::sleep(std::time::Duration::from_millis(40));
    let ack = w.poll().unwrap();
    assert_eq!((ack.appended, ack.durable), (1, 1));
    assert!(w.next_deadline().is_none());
}

fn arb_timepoint() -> impl Strategy<Value = Timepoint> {
    (0u32..4, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(vcpu, branches, rip, rcx)| {
        Timepoint {
            vcpu,
            branches,
            rip,
            rcx,
        }
    })
}

fn arb_record() -> impl Strategy<Value = Record> {
    use motion_records::*;
    prop_oneof![
        (any::<u16>(), any::<u8>(), any::<u32>()).prop_map(|(port, size, value)| PortIn {
            port,
            size,
            value
        }
        .into()),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..=16))
            .prop_map(|(gpa, b)| MmioRead::new(gpa, &b).unwrap().into()),
        any::<u64>().prop_map(|value| Rdtsc { value }.into()),
        (any::<u64>(), any::<u32>()).prop_map(|(value, aux)| Rdtscp { value, aux }.into()),
        (any::<u64>(), any::<bool>()).prop_map(|(value, ok)| Rdrand { value, ok }.into()),
        (any::<u64>(), any::<bool>()).prop_map(|(value, ok)| Rdseed { value, ok }.into()),
        (any::<u8>(), arb_timepoint()).prop_map(|(vector, at)| Interrupt { vector, at }.into()),
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::option::of(arb_timepoint())
        )
            .prop_map(|(gpa, bytes, at)| DmaWrite { gpa, bytes, at }.into()),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|bytes| SerialInput { bytes }.into()),
        (
            arb_timepoint(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(at, memory_hash, a, b)| {
                Digest {
                    at,
                    regs: vcpu::Regs {
                        rax: a,
                        rip: b,
                        ..Default::default()
                    },
                    memory_hash,
                    retired: vcpu::RetiredCounts {
                        instructions: a,
                        branches: b,
                    },
                }
                .into()
            }),
        (any::<u32>(), proptest::option::of(arb_timepoint())).prop_map(|(code, at)| End {
            status: EndStatus::GuestShutdown { code },
            at
        }
        .into()),
        ".{0,20}".prop_map(|message| End {
            status: EndStatus::Error { message },
            at: None
        }
        .into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_records_round_trip(
        records in proptest::collection::vec(arb_record(), 0..300),
        block_bytes in 64usize..20_000,
        batch in 1usize..50,
        seal in any::<bool>(),
        policy in 0u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let durability = match policy {
            0 => Durability::EveryBatch,
            1 => Durability::Interval(std::time::Duration::from_millis(1)),
            _ => Durability::AtSeal,
        };
        let mut w = LogWriter::create(&path, &sample::machine(), config(durability, block_bytes)).unwrap();
        for chunk in records.chunks(batch) {
            w.append(chunk).unwrap();
        }
        if seal { w.seal().unwrap(); } else { w.flush().unwrap(); }
        let r = LogReader::open(&path).unwrap();
        prop_assert_eq!(r.sealed().is_some(), seal);
        let got: Vec<Record> = r.records().map(|x| x.unwrap().1).collect();
        prop_assert_eq!(&got, &records);
        let v = r.verify().unwrap();
        prop_assert!(v.is_intact());
        prop_assert_eq!(v.records, records.len() as u64);
    }
}

#[test]
fn encoded_batches_are_validated_whole() {
    use log_store::EncodedRecord;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.log");
    let records: Vec<Record> = (0..500).map(|i| sample::mixed(6, i)).collect();
    let payloads: Vec<(u16, Vec<u8>)> = records
        .iter()
        .map(|r| (r.record_type().id(), r.to_payload().unwrap()))
        .collect();
    let encoded: Vec<EncodedRecord<'_>> = payloads
        .iter()
        .zip(&records)
        .map(|((t, p), r)| EncodedRecord {
            type_id: *t,
            payload: p,
            timepoint: r.timepoint().copied(),
        })
        .collect();
    let mut w = LogWriter::create(
        &path,
        &sample::machine(),
        config(Durability::EveryBatch, 2048),
    )
    .unwrap();
    let ack = w.append_encoded(&encoded[..300]).unwrap();
    assert_eq!((ack.appended, ack.durable), (300, 300));

    // One bad record anywhere refuses the whole batch.
    let mut bad = encoded[300..].to_vec();
    bad[57] = EncodedRecord {
        type_id: 999,
        payload: b"x",
        timepoint: None,
    };
    let e = w.append_encoded(&bad).unwrap_err();
    assert!(
        matches!(e, LogError::InvalidRecord { index: 57, .. }),
        "{e}"
    );
    bad[57] = EncodedRecord {
        type_id: RecordType::Rdtsc.id(),
        payload: &[0xff],
        timepoint: None,
    };
    assert!(matches!(
        w.append_encoded(&bad),
        Err(LogError::InvalidRecord { index: 57, .. })
    ));
    // A timepoint that is not the payload's.
    let mut lying = encoded[300..].to_vec();
    let k = lying.iter().position(|r| r.timepoint.is_some()).unwrap();
    lying[k].timepoint = None;
    assert!(matches!(
        w.append_encoded(&lying),
        Err(LogError::InvalidRecord { .. })
    ));
    assert_eq!(w.ack().appended, 300);

    w.append_encoded(&encoded[300..]).unwrap();
    w.seal().unwrap();
    let r = LogReader::open(&path).unwrap();
    let got: Vec<Record> = r.records().map(|x| x.unwrap().1).collect();
    assert_eq!(got, records);
    // Timepoints of encoded records reach the index.
    let tp = *records[400..].iter().find_map(|r| r.timepoint()).unwrap();
    assert!(r.find_timepoint(&tp).unwrap().unwrap() <= 400 + 40);
}

#[test]
fn a_seal_torn_by_a_crash_is_cut_back_to_the_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Record> = (0..800).map(|i| sample::mixed(8, i)).collect();
    let sealed = dir.path().join("sealed.log");
    write_log(&sealed, &records, config(Durability::AtSeal, 2048), true);
    let bytes = std::fs::read(&sealed).unwrap();
    let t = LogReader::open(&sealed).unwrap().sealed().copied().unwrap();
    // Cut inside the index, at its end, and inside the trailer.
    for (k, cut) in [
        t.index_offset + 5,
        t.index_offset + t.index_len,
        bytes.len() as u64 - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("cut{k}.log"));
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        let v = log_store::verify_path(&path).unwrap();
        assert!(v.fault.as_ref().unwrap().torn_tail, "{:?}", v.fault);
        let (w, rec) = LogWriter::recover(&path, WriterConfig::default()).unwrap();
        assert_eq!(rec.kept_records, 800);
        assert_eq!(rec.truncated_bytes, cut - t.index_offset);
        w.seal().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "resealing restores the same file"
        );
    }
}

#[test]
fn an_oversized_machine_description_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample::machine();
    m.guest_name = "x".repeat(2 << 20);
    let e = LogWriter::create(dir.path().join("m.log"), &m, WriterConfig::default()).unwrap_err();
    assert!(matches!(e, LogError::Config(_)), "{e}");
    assert!(!dir.path().join("m.log").exists());
}
