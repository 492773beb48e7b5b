//! `motion log inspect|verify`: look into a recording's log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use log_store::{Scan, format::BLOCK_HEADER_LEN};
use motion_records::{RecordType, counter_mode_name, hex};
use serde_json::{Value, json};

/// `motion log` subcommands.
#[derive(Subcommand)]
pub enum LogCmd {
    /// Header, counts per record type, sizes and compression ratio.
    Inspect {
        /// The log file.
        log: PathBuf,
        /// End with one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Check every byte: exit 0 when intact (sealed or not), 1 with the first
    /// bad block/frame and its offset when damaged, 2 when unreadable.
    Verify {
        /// The log file.
        log: PathBuf,
        /// End with one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `motion log` subcommand.
pub fn run(cmd: LogCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCmd::Inspect { log, json } => inspect(&log, json),
        LogCmd::Verify { log, json } => verify(&log, json),
    }
}

fn scan(log: &Path, as_json: bool) -> Result<Scan, ExitCode> {
    log_store::verify_path(log).map_err(|e| {
        eprintln!("motion log: {e}");
        if as_json {
            println!("{}", json!({ "error": e.to_string() }));
        }
        ExitCode::from(2)
    })
}

fn type_name(id: u16) -> String {
    RecordType::from_id(id).map_or_else(|_| format!("type-{id}"), |t| t.name().to_string())
}

fn fault_json(s: &Scan) -> Value {
    match &s.fault {
        None => Value::Null,
        Some(f) => json!({
            "region": f.region,
            "offset": f.offset,
            "reason": f.reason,
            "torn_tail": f.torn_tail,
            "description": f.to_string(),
        }),
    }
}

fn stored_bytes(s: &Scan) -> u64 {
    s.blocks
        .iter()
        .map(|b| BLOCK_HEADER_LEN as u64 + u64::from(b.entry.stored_len))
        .sum()
}

fn inspect(log: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let s = match scan(log, as_json) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let stored = stored_bytes(&s);
    let ratio = if stored > 0 {
        s.raw_bytes as f64 / stored as f64
    } else {
        0.0
    };
    let per_record = |bytes: u64| {
        if s.records > 0 {
            bytes as f64 / s.records as f64
        } else {
            0.0
        }
    };
    let state = match (&s.fault, &s.sealed) {
        (Some(_), _) => "damaged",
        (None, Some(_)) => "sealed",
        (None, None) => "unsealed",
    };
    println!("log:      {}", log.display());
    println!(
        "format:   version {}, {state}",
        log_store::format::FORMAT_VERSION
    );
    if let Some(m) = &s.machine {
        println!(
            "machine:  backend {}, guest {}, {} vCPU(s), {} MiB memory, counter mode {}",
            m.backend,
            m.guest_name,
            m.vcpus,
            m.memory_bytes >> 20,
            counter_mode_name(m.counter_mode)
        );
        println!("guest image: {}", hex(&m.guest_image));
        println!(
            "disk image:  {}",
            m.disk_image.as_ref().map_or("none".to_string(), |h| hex(h))
        );
        println!("cpuid:    {} entries", m.cpuid.entries.len());
        if !m.untrapped.is_empty() {
            let names: Vec<&str> = m.untrapped.iter().map(|u| u.name()).collect();
            println!(
                "untrapped: {} (the {} backend could not trap them: their values are not in the log, a guest that executed one will not replay)",
                names.join(", "),
                m.backend
            );
        }
    }
    println!("records:  {} in {} blocks", s.records, s.blocks.len());
    for (id, n) in &s.counts {
        println!("  {:<14} {n}", type_name(*id));
    }
    println!(
        "sizes:    file {} B, frames {} B raw, {} B stored (blocks with headers); ratio {ratio:.2}:1",
        s.file_len, s.raw_bytes, stored
    );
    println!(
        "per record: {:.1} B raw, {:.1} B stored",
        per_record(s.raw_bytes),
        per_record(stored)
    );
    println!("chain head: {}", hex(&s.chain_head));
    if let Some(f) = &s.fault {
        println!(
            "damage:   {f} (only the {} records before it are readable)",
            s.records
        );
    }
    if as_json {
        let machine = s.machine.as_ref().map(|m| {
            json!({
                "backend": m.backend,
                "guest_name": m.guest_name,
                "vcpus": m.vcpus,
                "memory_bytes": m.memory_bytes,
                "guest_image": hex(&m.guest_image),
                "disk_image": m.disk_image.as_ref().map(|h| hex(h)),
                "cpuid_entries": m.cpuid.entries.len(),
                "counter_mode": counter_mode_name(m.counter_mode),
                "untrapped": m.untrapped.iter().map(|u| u.name()).collect::<Vec<_>>(),
            })
        });
        let counts: serde_json::Map<String, Value> = s
            .counts
            .iter()
            .map(|(id, n)| (type_name(*id), json!(n)))
            .collect();
        let v = json!({
            "path": log.display().to_string(),
            "format_version": log_store::format::FORMAT_VERSION,
            "state": state,
            "sealed": s.sealed.is_some(),
            "machine": machine,
            "records": s.records,
            "blocks": s.blocks.len(),
            "counts": counts,
            "file_bytes": s.file_len,
            "raw_bytes": s.raw_bytes,
            "stored_bytes": stored,
            "compression_ratio": ratio,
            "raw_bytes_per_record": per_record(s.raw_bytes),
            "stored_bytes_per_record": per_record(stored),
            "chain_head": hex(&s.chain_head),
            "fault": fault_json(&s),
        });
        println!("{v}");
    }
    // Not a log at all (no usable header) is a failure; a damaged log whose
    // header is fine has been described, which is what inspect is for.
    Ok(if s.machine.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verify(log: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let s = match scan(log, as_json) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    match &s.fault {
        None => println!(
            "intact: {} records in {} blocks, {}; chain head {}",
            s.records,
            s.blocks.len(),
            if s.sealed.is_some() {
                "sealed"
            } else {
                "unsealed (the writer did not seal it)"
            },
            hex(&s.chain_head)
        ),
        Some(f) => {
            let what = if matches!(f.region, log_store::Region::Frame { .. }) {
                "frame"
            } else {
                "region"
            };
            println!("DAMAGED: first bad {what}: {f}");
            println!(
                "the {} records in the {} blocks before it check out",
                s.records,
                s.blocks.len()
            );
        }
    }
    if as_json {
        let v = json!({
            "intact": s.fault.is_none(),
            "sealed": s.sealed.is_some(),
            "records": s.records,
            "blocks": s.blocks.len(),
            "chain_head": hex(&s.chain_head),
            "fault": fault_json(&s),
        });
        println!("{v}");
    }
    Ok(if s.fault.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
