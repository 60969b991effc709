#!/usr/bin/env python3
"""Helper for bench/asr-vs-faster-whisper.sh: makes the test files, runs faster-whisper, scores.

    asr_bench.py make DIR                      speech files (espeak-ng + sox) and references
    asr_bench.py run MODEL_DIR DIR BENCH_BIN   per file: faster-whisper (in this process, warmed
                                               up, DIR/fw.json), then voxline's bench example
                                               (DIR/vox/NAME.I.out); BENCH_THREADS, BENCH_REPEATS
    asr_bench.py report DIR                    WER and timing table from DIR/fw.json, DIR/vox/*.out

No package beyond faster-whisper (only for `run`). Every generated file is the same
on every run: espeak-ng is deterministic and sox runs with -R (fixed seed for its noise).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# ---------------------------------------------------------------------------------------------
# Test material. References are written the way they are spoken (numbers in words).

SALES = """\
Good morning, and thank you for taking the time to speak with me today. My name is Daniel, \
and I work with a company that helps small businesses manage their customer relationships. \
I understand that your team has grown quickly over the last year, and that keeping track of \
every lead has become a real challenge.

Many of our clients told us the same thing before they started. Their salespeople were \
spending hours each week copying notes from emails into spreadsheets. Important calls were \
missed, and nobody had a clear picture of the pipeline. Our platform brings all of that into \
one place, so your team can focus on selling instead of typing.

Let me give you a quick example. A furniture store in Ohio started using our tools in the \
spring. Within three months, they closed twenty percent more deals, and their managers \
finally had reports they could trust.

I would love to set up a short demonstration for you and your colleagues next week. \
Would Tuesday afternoon or Thursday morning work better for your schedule?
"""

# (espeak-ng voice, pitch 0-99, words per minute, text)
PHONE_TURNS = [
    ("en-us+f3", 70, 165, "Hello, this is Sarah from customer support. How can I help you today?"),
    ("en-gb", 35, 160, "Hi Sarah. I ordered a new laptop last week, but it still has not arrived."),
    ("en-us+f3", 70, 165, "I am sorry to hear that. Could you tell me the name on the order, please?"),
    ("en-gb", 35, 160, "Of course. It should be under Peter Collins."),
    ("en-us+f3", 70, 165, "Thank you, Peter. I can see the package was delayed at our warehouse. "
                          "It will ship tomorrow morning."),
    ("en-gb", 35, 160, "Great, that is all I needed. Thanks for your help, and have a nice evening."),
]

TRAILING_SPEECH = (
    "Before we finish, I want to summarize the three action items from today's meeting. "
    "First, Maria will send the updated contract. Second, the pricing team will review the "
    "discount. Finally, we will all meet again on Friday to sign the agreement."
)
TRAILING_SILENCE_SECS = 20
NOISE_VOL = 0.0005

# Order of the table.
FILES = ["sales_60s", "phone_30s", "trailing_silence"]
SEED = 1234


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def espeak(text, out, voice="en-us", pitch=50, wpm=165):
    run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-w", out, text])


def duration(path):
    out = subprocess.run(["soxi", "-D", path], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def make(d):
    os.makedirs(d, exist_ok=True)
    work = os.path.join(d, "parts")
    os.makedirs(work, exist_ok=True)
    meta = {}

    # (a) ~60 s monologue, one espeak-ng run per paragraph joined with 0.6 s pauses, 16 kHz.
    paras = [p.replace("\n", " ").strip() for p in SALES.split("\n\n") if p.strip()]
    parts = []
    for i, p in enumerate(paras):
        raw = os.path.join(work, f"sales_{i}.wav")
        espeak(p, raw, "en-us", 50, 165)
        part = os.path.join(work, f"sales_{i}_16k.wav")
        run(["sox", "-R", raw, "-r", "16000", "-c", "1", "-b", "16", part, "pad", "0", "0.6"])
        parts.append(part)
    out = os.path.join(d, "sales_60s.wav")
    run(["sox", "-R", *parts, out])
    write(d, "sales_60s", " ".join(paras))
    meta["sales_60s"] = {"duration": duration(out)}

    # (b) ~30 s telephone call: two voices alternating, mono, G.711-like 300-3400 Hz band,
    # mu-law at 8 kHz, then back to 16 kHz.
    parts = []
    for i, (voice, pitch, wpm, text) in enumerate(PHONE_TURNS):
        raw = os.path.join(work, f"turn_{i}.wav")
        espeak(text, raw, voice, pitch, wpm)
        part = os.path.join(work, f"turn_{i}_16k.wav")
        run(["sox", "-R", raw, "-r", "16000", "-c", "1", "-b", "16", part, "pad", "0", "0.35"])
        parts.append(part)
    call = os.path.join(work, "call_16k.wav")
    run(["sox", "-R", *parts, call])
    call8k = os.path.join(work, "call_8k_ulaw.wav")
    run(["sox", "-R", call, "-e", "u-law", "-b", "8", "-r", "8000", call8k,
         "sinc", "300-3400", "gain", "-n", "-3", "rate", "8k"])
    out = os.path.join(d, "phone_30s.wav")
    run(["sox", "-R", call8k, "-e", "signed-integer", "-b", "16", out, "rate", "16k"])
    write(d, "phone_30s", " ".join(t for _, _, _, t in PHONE_TURNS))
    meta["phone_30s"] = {"duration": duration(out)}

    # (c) speech, then 20 s of very low white noise; the reference is the speech only.
    raw = os.path.join(work, "trailing_raw.wav")
    espeak(TRAILING_SPEECH, raw, "en-us", 50, 165)
    speech = os.path.join(work, "trailing_speech.wav")
    run(["sox", "-R", raw, "-r", "16000", "-c", "1", "-b", "16", speech])
    noise = os.path.join(work, "noise.wav")
    run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", noise,
         "synth", str(TRAILING_SILENCE_SECS), "whitenoise", "vol", str(NOISE_VOL)])
    out = os.path.join(d, "trailing_silence.wav")
    run(["sox", "-R", speech, noise, out])
    write(d, "trailing_silence", TRAILING_SPEECH)
    meta["trailing_silence"] = {"duration": duration(out), "speech_end": duration(speech)}

    shutil.rmtree(work)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for name in FILES:
        print(f"  {name}.wav  {meta[name]['duration']:5.1f} s  "
              f"{len(normalise(read_ref(d, name)))} reference words")


def write(d, name, text):
    with open(os.path.join(d, f"{name}.txt"), "w") as f:
        f.write(text.strip() + "\n")


def read_ref(d, name):
    with open(os.path.join(d, f"{name}.txt")) as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# faster-whisper

PREPROCESSOR = {
    "feature_size": 80, "sampling_rate": 16000, "n_fft": 400, "hop_length": 160,
    "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000,
    "feature_extractor_type": "WhisperFeatureExtractor", "padding_side": "right",
    "padding_value": 0.0, "return_attention_mask": False,
}


def load_model(model_dir, threads):
    from faster_whisper import WhisperModel

    def load(path):
        return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)

    if os.path.exists(os.path.join(model_dir, "preprocessor_config.json")):
        return load(model_dir), None
    try:
        return load(model_dir), None
    except Exception as e:  # older faster-whisper: wants preprocessor_config.json
        print(f"  faster-whisper refused {model_dir} ({e}); retrying with a "
              "preprocessor_config.json in a copy", file=sys.stderr)
        tmp = tempfile.mkdtemp(prefix="fw-model-")
        for n in os.listdir(model_dir):
            shutil.copy(os.path.join(model_dir, n), tmp)
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            json.dump(PREPROCESSOR, f)
        return load(tmp), tmp


def transcribe(model, path):
    import ctranslate2

    # The temperature fallback samples: a fixed seed per file keeps the result repeatable.
    ctranslate2.set_random_seed(SEED)
    started = time.perf_counter()
    segments, _info = model.transcribe(
        path, beam_size=1, language="en", condition_on_previous_text=False)
    segs = [{"start": s.start, "end": s.end, "text": s.text.strip()} for s in segments]
    return time.perf_counter() - started, segs


def run_voxline(bench_bin, model_dir, d, name, i, threads):
    """One run of voxline's bench example (a fresh process); its stdout goes to vox/NAME.I.out."""
    out = os.path.join(d, "vox", f"{name}.{i}.out")
    err = os.path.join(d, "vox", f"{name}.{i}.err")
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([bench_bin, model_dir, os.path.join(d, f"{name}.wav"), str(threads)],
                            stdout=o, stderr=e).returncode
    if rc != 0:
        with open(err) as e:
            sys.stderr.write(e.read())
        raise SystemExit(f"error: voxline bench failed on {name}.wav (exit {rc})")
    with open(out) as o:
        text = o.read()
    if "warning: unoptimised build" in text:
        raise SystemExit("error: voxline's bench example is an unoptimised build")
    return parse_vox(out)


def run_both(model_dir, d, bench_bin, threads, repeats):
    """faster-whisper and voxline file by file, one after the other, so both see the same load."""
    import resource

    os.makedirs(os.path.join(d, "vox"), exist_ok=True)
    started = time.perf_counter()
    model, tmp = load_model(model_dir, threads)
    load_secs = time.perf_counter() - started
    files = [os.path.join(d, f"{n}.wav") for n in FILES]
    warm, _ = transcribe(model, files[0])
    print(f"  faster-whisper: load {load_secs:.2f} s, warm-up run on {FILES[0]} {warm:.2f} s")
    result = {}
    for name, path in zip(FILES, files):
        times, segs = [], None
        for i in range(1, repeats + 1):
            # Alternate which goes first, in case the other one leaves the caches warm.
            if i % 2 == 0:
                vox = run_voxline(bench_bin, model_dir, d, name, i, threads)
            secs, segs = transcribe(model, path)
            times.append(secs)
            if i % 2 == 1:
                vox = run_voxline(bench_bin, model_dir, d, name, i, threads)
            print(f"  {name} run {i}: faster-whisper {secs:.2f} s, voxline decode+transcribe "
                  f"{vox['secs']:.2f} s (decode {vox['decode']:.2f}, model load "
                  f"{vox['load']:.2f} excluded), peak RSS {vox['rss_mib']} MiB")
        result[name] = {"secs": min(times), "all_secs": times, "segments": segs}
    result["_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(d, "fw.json"), "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------------------------
# voxline's bench output

SEG_RE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\]\s?(.*)$")
SUMMARY_RE = re.compile(
    r"^audio ([\d.]+) s, load ([\d.]+) s, decode ([\d.]+) s, transcribe ([\d.]+) s,"
    r".*peak RSS (\d+) MiB")


def parse_vox(path):
    """One run's stdout: segments, decode+transcribe seconds, peak RSS."""
    segs, summary = [], None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = SEG_RE.match(line)
            if m:
                segs.append({"start": float(m[1]), "end": float(m[2]), "text": m[3].strip()})
                continue
            m = SUMMARY_RE.match(line)
            if m:
                summary = m
    if summary is None:
        raise SystemExit(f"error: no summary line in voxline's output {path}")
    return {
        "load": float(summary[2]),
        "decode": float(summary[3]),
        "transcribe": float(summary[4]),
        "secs": float(summary[3]) + float(summary[4]),
        "rss_mib": int(summary[5]),
        "segments": segs,
    }


def voxline(d, name):
    runs = sorted(f for f in os.listdir(os.path.join(d, "vox")) if f.startswith(name + ".") and f.endswith(".out"))
    parsed = [parse_vox(os.path.join(d, "vox", f)) for f in runs]
    if not parsed:
        raise SystemExit(f"error: no voxline output for {name}")
    best = min(parsed, key=lambda r: r["secs"])
    return {
        "secs": best["secs"],
        "all_secs": [r["secs"] for r in parsed],
        "decode": best["decode"],
        "load": best["load"],
        "rss_mib": max(r["rss_mib"] for r in parsed),
        "segments": parsed[0]["segments"],
    }


# ---------------------------------------------------------------------------------------------
# WER

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def int_words(n):
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [ONES[n // 100], "hundred"] + (int_words(n % 100) if n % 100 else [])
    for size, word in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return int_words(n // size) + [word] + (int_words(n % size) if n % size else [])
    raise AssertionError


def number_words(m):
    cur, num, pct = m.group(1), m.group(2).replace(",", ""), m.group(3)
    whole, _, frac = num.partition(".")
    words = int_words(int(whole)) if len(whole) < 13 else list(whole)
    if frac:
        words += ["point"] + [ONES[int(c)] for c in frac]
    if pct:
        words.append("percent")
    if cur:
        words.append("dollars")
    return " " + " ".join(words) + " "


NUM_RE = re.compile(r"(\$)?(\d[\d,]*(?:\.\d+)?)(%)?")


def normalise(text):
    """Lowercase words: numbers spelt out, hyphens split, apostrophes and punctuation dropped."""
    t = text.lower()
    t = NUM_RE.sub(number_words, t)
    t = t.replace("-", " ").replace("\u2019", "'").replace("'", "")
    t = re.sub(r"[^a-z ]+", " ", t)
    return t.split()


def edit_distance(ref, hyp):
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def joined(segs):
    return " ".join(s["text"] for s in segs)


def report(d):
    with open(os.path.join(d, "fw.json")) as f:
        fw = json.load(f)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    rows, tot = [], {"ref": 0, "vox_err": 0, "fw_err": 0, "vox_s": 0.0, "fw_s": 0.0}
    vox_rss = 0
    hyps = {}
    for name in FILES:
        ref = normalise(read_ref(d, name))
        vox = voxline(d, name)
        f = fw[name]
        ve = edit_distance(ref, normalise(joined(vox["segments"])))
        fe = edit_distance(ref, normalise(joined(f["segments"])))
        tot["ref"] += len(ref)
        tot["vox_err"] += ve
        tot["fw_err"] += fe
        tot["vox_s"] += vox["secs"]
        tot["fw_s"] += f["secs"]
        vox_rss = max(vox_rss, vox["rss_mib"])
        rows.append((name, meta[name]["duration"], len(ref), vox["secs"], f["secs"],
                     vox["secs"] / f["secs"], 100 * ve / len(ref), 100 * fe / len(ref),
                     vox["rss_mib"]))
        hyps[name] = (vox["segments"], f["segments"])

    hdr = ("file", "audio s", "ref words", "voxline s", "f-w s", "vox/f-w", "WER vox",
           "WER f-w", "vox RSS MiB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f}x | "
              f"{r[6]:.1f}% | {r[7]:.1f}% | {r[8]} |")

    # Hallucination check on the trailing silence: words in segments that start after the speech.
    end = meta["trailing_silence"]["speech_end"]
    vseg, fseg = hyps["trailing_silence"]
    after = lambda segs: [s["text"] for s in segs if s["start"] >= end - 0.5]
    va, fa = after(vseg), after(fseg)
    print(f"\ntrailing silence (speech ends at {end:.1f} s): text after the speech: "
          f"voxline {json.dumps(' '.join(va)) if va else 'none'}, "
          f"faster-whisper {json.dumps(' '.join(fa)) if fa else 'none'}")

    print("\ntranscripts:")
    for name in FILES:
        vseg, fseg = hyps[name]
        print(f"  {name}")
        print(f"    voxline:        {joined(vseg)}")
        print(f"    faster-whisper: {joined(fseg)}")

    ratio = tot["vox_s"] / tot["fw_s"]
    print(f"\nasr: voxline/faster-whisper wall time {ratio:.2f}x (sum over files: "
          f"{tot['vox_s']:.2f} s vs {tot['fw_s']:.2f} s), "
          f"WER voxline {100 * tot['vox_err'] / tot['ref']:.1f}% "
          f"faster-whisper {100 * tot['fw_err'] / tot['ref']:.1f}%, "
          f"peak RSS {vox_rss} MiB (voxline; faster-whisper process "
          f"{fw['_peak_rss_mib']:.0f} MiB)")


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "make":
        make(args[1])
    elif len(args) >= 4 and args[0] == "run":
        threads = int(os.environ.get("BENCH_THREADS", "2"))
        repeats = int(os.environ.get("BENCH_REPEATS", "1"))
        run_both(args[1], args[2], args[3], threads, repeats)
    elif len(args) >= 2 and args[0] == "report":
        report(args[1])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
