//! Tamper evidence: flip, insert or delete bytes at seeded random positions
//! in every region of a log; verify must name the region holding the first
//! altered byte, at that region's offset, every time, and the reader must
//! never panic on the altered bytes.

use log_store::sample;
use log_store::{Durability, LogReader, LogWriter, Region, WriterConfig};
use motion_records::{DmaWrite, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A region of the original file: what verify should report, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    region: Region,
    start: u64,
    end: u64,
}

struct Log {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

fn build(seal: bool, with_random_payloads: bool, seed: u64) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.log");
    let cfg = WriterConfig {
        durability: Durability::AtSeal,
        block_bytes: 1500,
        ..WriterConfig::default()
    };
    let mut w = LogWriter::create(&path, &sample::machine(), cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..400u64 {
        let r = if with_random_payloads && i % 40 == 0 {
            // Incompressible: these blocks are stored uncompressed.
            let bytes: Vec<u8> = (0..1400).map(|_| rng.random()).collect();
            Record::from(DmaWrite {
                gpa: i,
                bytes,
                at: None,
            })
        } else {
            sample::mixed(seed, i)
        };
        w.append(&[r]).unwrap();
    }
    if seal {
        w.seal().unwrap();
    } else {
        w.flush().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let reader = LogReader::open(&path).unwrap();
    let scan = reader.verify().unwrap();
    assert!(scan.is_intact());
    let mut spans = vec![Span {
        region: Region::Header,
        start: 0,
        end: scan.header_len,
    }];
    for (k, b) in scan.blocks.iter().enumerate() {
        let start = b.entry.offset;
        spans.push(Span {
            region: Region::Block { block: k as u64 },
            start,
            end: start + 76 + u64::from(b.entry.stored_len),
        });
    }
    if let Some(t) = scan.sealed {
        spans.push(Span {
            region: Region::Index,
            start: t.index_offset,
            end: t.index_offset + t.index_len,
        });
        let ts = t.index_offset + t.index_len;
        spans.push(Span {
            region: Region::Trailer,
            start: ts,
            end: ts + 108,
        });
    }
    // The spans tile the file.
    for w in spans.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    assert_eq!(spans.last().unwrap().end, bytes.len() as u64);
    Log { bytes, spans }
}

fn span_of(log: &Log, pos: u64) -> Span {
    if let Some(s) = log.spans.iter().find(|s| pos < s.end) {
        return *s;
    }
    // Bytes appended at the end: after a trailer they are the trailer's
    // fault (bytes follow it); after the last block of an unsealed log they
    // are the next block, which is torn.
    let last = *log.spans.last().unwrap();
    match last.region {
        Region::Trailer => last,
        _ => {
            let blocks = log
                .spans
                .iter()
                .filter(|s| s.region.block().is_some())
                .count();
            Span {
                region: Region::Block {
                    block: blocks as u64,
                },
                start: pos,
                end: pos,
            }
        }
    }
}

/// Read everything a reader will give from these bytes; it must not panic.
fn read_everything(bytes: &[u8]) {
    if let Ok(r) = LogReader::from_source(bytes) {
        for item in r.records() {
            if item.is_err() {
                break;
            }
        }
        let n = r.record_count();
        let _ = r.records_from(n / 2).map(|it| it.take(5).count());
        let _ = r.find_timepoint(&vcpu::Timepoint {
            vcpu: 1,
            branches: 3000,
            rip: 0,
            rcx: 0,
        });
    }
}

#[test]
fn verify_names_the_first_altered_region_every_time() {
    let logs = [
        build(true, false, 11),
        build(true, true, 12),
        build(false, true, 13),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(0x7a3e_2024);
    let mut hits: std::collections::BTreeMap<&'static str, u32> = Default::default();
    let trials = 3000;
    for trial in 0..trials {
        let log = &logs[trial % logs.len()];
        let len = log.bytes.len() as u64;
        // Pick a region first so small regions (header, trailer) get their share.
        let span = log.spans[rng.random_range(0..log.spans.len())];
        let mut bytes = log.bytes.clone();
        let op = rng.random_range(0..3);
        let (pos, what) = match op {
            0 => {
                let pos = rng.random_range(span.start..span.end);
                bytes[pos as usize] ^= rng.random_range(1..=255u8);
                (pos, "flip")
            }
            1 => {
                // Inserting before `pos`; at the very end means appending.
                let pos = if span.end == len && rng.random_ratio(1, 8) {
                    len
                } else {
                    rng.random_range(span.start..span.end)
                };
                let n = rng.random_range(1..=4);
                for _ in 0..n {
                    bytes.insert(pos as usize, rng.random());
                }
                (pos, "insert")
            }
            _ => {
                let pos = rng.random_range(span.start..span.end);
                let n = rng.random_range(1..=4).min(len - pos);
                bytes.drain(pos as usize..(pos + n) as usize);
                (pos, "delete")
            }
        };
        let expect = span_of(log, pos);
        let scan = log_store::verify(&bytes[..]).unwrap();
        let fault = scan.fault.clone().unwrap_or_else(|| {
            panic!(
                "trial {trial}: {what} at {pos} ({:?}) not detected",
                expect.region
            )
        });
        let same_region = match (expect.region, fault.region) {
            (Region::Block { block }, got) => got.block() == Some(block),
            (want, got) => want == got,
        };
        assert!(
            same_region && fault.offset == expect.start,
            "trial {trial}: {what} at {pos} in {:?}@{} but verify reported {fault}",
            expect.region,
            expect.start
        );
        read_everything(&bytes);
        let key = match expect.region {
            Region::Header => "header",
            Region::Block { .. } | Region::Frame { .. } => "block",
            Region::Index => "index",
            Region::Trailer => "trailer",
        };
        *hits.entry(key).or_default() += 1;
    }
    eprintln!("tamper trials per region (all detected and located): {hits:?}");
    assert!(
        hits.len() == 4 && hits.values().all(|&n| n >= 50),
        "{hits:?}"
    );
}

/// A block whose chain hash is right but whose frames are not (a buggy or
/// forging writer): verify names the frame, its record number and its
/// offset in the block; the reader stops there with the same fault.
#[test]
fn a_bad_frame_inside_a_well_chained_block_is_pinpointed() {
    use log_store::format::{self, BlockHeader, CODEC_NONE};
    let header = format::encode_file_header(&sample::machine());
    let mut frames = Vec::new();
    let mut starts = Vec::new();
    for i in 0..5 {
        let s = format::begin_frame(&mut frames);
        starts.push(s);
        sample::small(0, i).encode_into(&mut frames).unwrap();
        format::finish_frame(&mut frames, s, sample::small(0, i).record_type().id());
    }
    // Damage frame 3's payload, then chain the block as if it were fine.
    frames[starts[3] + 6] ^= 0x01;
    let mut h = BlockHeader {
        index: 0,
        first_record: 0,
        record_count: 5,
        raw_len: frames.len() as u32,
        stored_len: frames.len() as u32,
        codec: CODEC_NONE,
        chain_hash: [0; 32],
    };
    h.chain_hash = h.compute_chain(&format::genesis_hash(&header), &frames);
    let mut hb = [0u8; 76];
    h.encode(&mut hb);
    let mut bytes = header.clone();
    bytes.extend_from_slice(&hb);
    bytes.extend_from_slice(&frames);

    let fault = log_store::verify(&bytes[..]).unwrap().fault.unwrap();
    assert_eq!(
        fault.region,
        Region::Frame {
            block: 0,
            frame: 3,
            record: 3,
            offset_in_block: starts[3] as u32
        }
    );
    assert_eq!(fault.offset, header.len() as u64);
    let r = LogReader::from_source(&bytes[..]).unwrap();
    assert_eq!(
        r.record_count(),
        0,
        "a block with a bad frame is not counted as readable"
    );
    let items: Vec<_> = r.records().collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
}
