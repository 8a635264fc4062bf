//! Migration throughput (copy with metadata + SHA-256 verification of every file) against
//! `sha256sum` of the source, `cp -a`, then `sha256sum -c` on the copy, on the same tree of
//! mixed small and large files. Run: `cargo bench -p pbxha-replica --bench migrate`.
//! Caches are warm for both (dropping them would disturb everyone else on the machine).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pbxha_replica::migrate::copy::{Copier, Progress};

const SMALL_FILES: usize = 3000;
const LARGE_FILES: usize = 6;
const LARGE_SIZE: usize = 32 << 20;
const RUNS: usize = 3;

fn build(dir: &Path) -> u64 {
    let mut bytes = 0u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for i in 0..SMALL_FILES {
        let sub = dir.join(format!("d{}", i % 30));
        std::fs::create_dir_all(&sub).unwrap();
        let data = noise(512 + (i * 7919) % 16384);
        bytes += data.len() as u64;
        std::fs::write(sub.join(format!("f{i}.conf")), data).unwrap();
    }
    for i in 0..LARGE_FILES {
        let data = noise(LARGE_SIZE);
        bytes += data.len() as u64;
        std::fs::write(dir.join(format!("recording-{i}.wav")), data).unwrap();
    }
    bytes
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let bytes = build(&src);
    let mib = bytes as f64 / (1 << 20) as f64;
    println!("tree: {SMALL_FILES} small files + {LARGE_FILES} x {} MiB = {mib:.0} MiB", LARGE_SIZE >> 20);

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..RUNS {
        let dst = t.path().join(format!("ours-{run}"));
        let started = Instant::now();
        let mut copier = Copier::new();
        let mut progress = Progress::new("bench", false);
        copier.copy_tree(&src, &dst, &mut progress).unwrap();
        copier.verify_tree(&src, &dst, &mut progress).unwrap();
        ours.push(started.elapsed());
        std::fs::remove_dir_all(&dst).unwrap();

        let dst = t.path().join(format!("cp-{run}"));
        let list = t.path().join("list");
        let script = "cd \"$1\" && find . -type f -print0 | xargs -0 sha256sum > \"$3\" && cp -a \"$1\" \"$2\" && cd \"$2\" && sha256sum -c --quiet \"$3\"";
        let started = Instant::now();
        let status = Command::new("sh").args(["-c", script, "sh"]).arg(&src).arg(&dst).arg(&list).status().unwrap();
        theirs.push(started.elapsed());
        assert!(status.success(), "baseline failed");
        std::fs::remove_dir_all(&dst).unwrap();
    }
    let (o, c) = (median(ours), median(theirs));
    println!("pbxha copy+verify:         {:>8.3} s  {:>7.1} MiB/s", o.as_secs_f64(), mib / o.as_secs_f64());
    println!("cp -a + sha256sum (-c):    {:>8.3} s  {:>7.1} MiB/s", c.as_secs_f64(), mib / c.as_secs_f64());
    println!(
        "speed ratio (pbxha / cp):  {:>8.2}  (goal >= 0.80; median of {RUNS} runs)",
        c.as_secs_f64() / o.as_secs_f64()
    );
}
