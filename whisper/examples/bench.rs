//! Transcribes one file and prints the segments, the real-time factor and the peak memory.
//!
//! ```sh
//! cargo run --release -p voxline-whisper --example bench -- MODEL_DIR AUDIO_FILE [THREADS]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use voxline_whisper::{WhisperSettings, bench_file_with};

fn main() -> ExitCode {
    // RUST_LOG=voxline_whisper=debug shows each window.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model_dir), Some(audio)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bench MODEL_DIR AUDIO_FILE [THREADS]");
        return ExitCode::from(2);
    };
    let mut settings = WhisperSettings::default();
    if let Some(threads) = args.get(2).and_then(|s| s.parse().ok()) {
        settings.threads = threads;
    }
    match bench_file_with(&PathBuf::from(model_dir), &PathBuf::from(audio), &settings) {
        Ok(report) => {
            for s in &report.segments {
                println!("[{:7.2} - {:7.2}] {}", s.start, s.end, s.text);
            }
            println!(
                "audio {:.1} s, load {:.2} s, decode {:.2} s, transcribe {:.2} s, \
                 real-time factor {:.3}, peak RSS {} MiB ({settings:?})",
                report.audio_secs,
                report.load_secs,
                report.decode_secs,
                report.transcribe_secs,
                report.real_time_factor,
                report.peak_rss_bytes.map_or(0, |b| b >> 20),
            );
            if !report.optimised_build {
                println!("warning: unoptimised build, timings are not meaningful");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
