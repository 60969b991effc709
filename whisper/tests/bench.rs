//! The benchmark the CLI runs, in a process of its own so that the peak memory it reports is
//! that of one transcription.

mod support;

use voxline_whisper::bench_file;

#[test]
fn the_benchmark_reports_its_real_time_factor_and_a_bounded_peak_memory() {
    let Some(model_dir) = support::model_dir() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("bench.wav");
    let text = "We have about ten minutes left, so let us go through the pricing options once more. \
        The basic plan covers up to five people and includes weekly practice sessions. \
        The team plan adds detailed reports for managers and a shared library of role plays. \
        Which of these sounds closer to what your team needs at the moment?";
    let Some(()) = support::speak(text, &wav) else {
        return;
    };

    let report = bench_file(&model_dir, &wav).expect("bench");
    let peak_mib = report.peak_rss_bytes.map(|b| b / (1 << 20));
    eprintln!(
        "bench: {:.1} s of audio, load {:.2} s, decode {:.2} s, transcribe {:.2} s, \
         real-time factor {:.3}, peak RSS {peak_mib:?} MiB",
        report.audio_secs,
        report.load_secs,
        report.decode_secs,
        report.transcribe_secs,
        report.real_time_factor
    );
    assert!(report.audio_secs > 10.0);
    assert!(!report.segments.is_empty());
    let processing = report.decode_secs + report.transcribe_secs;
    assert!((report.real_time_factor - processing / report.audio_secs).abs() < 1e-9);
    // Measured ~230 MB; a gigabyte would mean something is held that should not be.
    let peak = report.peak_rss_bytes.expect("VmHWM on Linux");
    assert!(peak < 1 << 30, "peak RSS {peak} bytes");

    if report.optimised_build {
        // Measured 0.1–0.35 on two busy cores (one 30 s window for 21 s of speech); 1.0 leaves
        // room for a loaded CI machine and still means a worker keeps up with uploads.
        assert!(
            report.real_time_factor < 1.0,
            "real-time factor {}",
            report.real_time_factor
        );
    } else {
        eprintln!(
            "NOTE: unoptimised build: the real-time factor is not checked; build with the \
             workspace's opt-level overrides for voxline-whisper and candle"
        );
    }
}
