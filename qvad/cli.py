"""``qvad predict``: score audio files and folders with the trained detector; ``qvad export``: a folder to serve.

```
qvad predict PATH... [--out scores.csv|scores.jsonl] [--segments] [--rttm speech.rttm]
                     [--batch-size N] [--device cpu|cuda] [--model-dir models] ...
```

One row per file (path, duration_s, orig_sr, channels, p_speech, decision, windows, error),
CSV to stdout unless ``--out`` names a .csv or .jsonl file. ``--segments`` adds speech segments
(a ``segments`` column: JSON ``[[start_s, end_s, p_speech], ...]`` in CSV, a list in JSONL;
``--segments-out`` writes them one per row too); ``--rttm`` writes them as RTTM. A file that
cannot be used gets a row whose ``error`` names the problem and the others go on. Exit status:
0 when every file was scored, 1 when any failed (or none was found), 2 for a usage or model
folder error. ``python -m qvad.cli predict ...`` does the same as the ``qvad`` console script.

```
qvad export [MODELS_DIR] OUT_DIR [--merge|--no-merge] [--force] [--dtype float32|bfloat16] [--project-dir DIR]
```

The trained detector as a folder others can serve (qvad.export, docs/export.md): by default the
adapter merged into the base, an ordinary ``Qwen2AudioForConditionalGeneration`` checkpoint, with
detector.json and a model card written from the run's metrics. Exit status 0, or 2 for unusable
input (the message names the path and the problem).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence, TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

ROW_FIELDS = ["path", "duration_s", "orig_sr", "channels", "p_speech", "decision", "windows", "error"]
SEGMENT_FIELDS = ["n_segments", "speech_s", "segments"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvad", description="Qwen2-Audio speech detector.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict", help="P(speech) per audio file, and speech segments",
        description="Score audio files and folders (recursively; every format soundfile reads). Any sample "
                    "rate and channel count become 16 kHz mono. Audio no longer than the model's container is "
                    "one clip; longer audio is scored in windows (P = the maximum over windows).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders")
    p.add_argument("--model-dir", default="models", help="folder with base/, adapter/ and detector.json (default: models)")
    p.add_argument("--out", default=None, help="write rows to this .csv or .jsonl file (default: CSV on stdout)")
    p.add_argument("--segments", action="store_true", help="also compute speech segments for every file")
    p.add_argument("--segments-out", default=None, help="write one row per segment to this .csv or .jsonl file "
                                                        "(implies --segments)")
    p.add_argument("--rttm", default=None, help="write speech segments as RTTM to this file (implies --segments)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="clips per forward pass (default: 64 on a GPU, 16 on the CPU)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--max-duration", type=_positive_float, default=None, metavar="SECONDS",
                   help="refuse files longer than this (default: 14400 s = 4 h)")
    g = p.add_argument_group("windows and segments (defaults: the model's detector.json, then Silero's "
                             "get_speech_timestamps)")
    g.add_argument("--window-ms", type=_positive_int, default=None, help="window length for long audio (default: the model's window_ms)")
    g.add_argument("--hop-ms", type=_positive_int, default=None, help="hop between windows (default: the model's hop_ms)")
    g.add_argument("--pool", choices=("mean", "min", "max"), default="mean",
                   help="how a 32 ms frame combines the windows covering it (default: mean)")
    g.add_argument("--threshold", type=_probability, default=None,
                   help="speech when calibrated P >= this (default: the model's decision threshold)")
    g.add_argument("--neg-threshold", type=_probability, default=None,
                   help="a segment ends when P drops below this (default: threshold - 0.15)")
    g.add_argument("--min-speech-ms", type=_nonneg_int, default=250, help="drop shorter segments (default: 250)")
    g.add_argument("--min-silence-ms", type=_nonneg_int, default=100, help="merge segments separated by less (default: 100)")
    g.add_argument("--speech-pad-ms", type=_nonneg_int, default=30, help="pad each segment by this much (default: 30)")
    g.add_argument("--max-speech-s", type=_positive_float, default=math.inf, help="split longer segments (default: no limit)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    e = sub.add_parser(
        "export", help="write the trained detector as a folder to serve (merged weights + model card)",
        description="Export MODELS_DIR (default: models) to OUT_DIR: the LoRA adapter merged into the base and "
                    "saved as safetensors with the processor (loadable by transformers alone, and by vLLM), "
                    "detector.json, and a README.md model card written from params.yaml, metrics/ and "
                    "data/raw/manifest.csv of the run.",
    )
    e.add_argument("dirs", nargs="+", metavar="[MODELS_DIR] OUT_DIR", help="models folder (default: models), then "
                                                                         "the folder to write")
    e.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                   help="merge the adapter into the base (default); --no-merge copies base/ and adapter/ as they are")
    e.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR (after the export is complete)")
    e.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="dtype of the merged weights (default: float32 for a float32 run, bfloat16 for bf16/NF4)")
    e.add_argument("--project-dir", default=None,
                   help="where the run's params.yaml, metrics/ and data/raw/manifest.csv are (default: the folder "
                        "that holds MODELS_DIR)")
    return parser


def _format_of(path: str, flag: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ValueError(f"{flag} {path}: the name must end in .csv or .jsonl")


class _RowWriter:
    """Rows to CSV or JSONL, as they come (file outputs are renamed into place at the end)."""

    def __init__(self, stream: TextIO, fmt: str, fields: Sequence[str]) -> None:
        self.stream, self.fmt, self.fields = stream, fmt, list(fields)
        self.csv = csv.DictWriter(stream, fieldnames=self.fields, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.csv is not None:
            self.csv.writerow({k: _csv_value(row.get(k)) for k in self.fields})
        else:
            self.stream.write(json.dumps({k: row.get(k) for k in self.fields}, allow_nan=False) + "\n")
        self.stream.flush()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return value


class _AtomicText:
    """A text file written beside ``path`` and renamed over it on success only."""

    def __init__(self, path: str) -> None:
        from qvad.common.atomic import atomic_path

        self._ctx = atomic_path(path)
        self.tmp = self._ctx.__enter__()
        self.stream = open(self.tmp, "w", encoding="utf-8", newline="")

    def close(self, ok: bool) -> None:
        self.stream.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _rttm_ids(paths: Sequence[str]) -> dict[str, str]:
    """RTTM file ids: the file stem, or the path (separators as '__') when two files share a stem."""
    stems = [Path(p).stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return {p: (str(Path(p).with_suffix("")).replace(os.sep, "__").replace("/", "__") if s in dup else s)
            for p, s in zip(paths, stems)}


def _quiet_libraries() -> None:
    """Keep the console to our progress bar and our messages: no library progress bars or avoidable warnings."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    try:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def predict(args: argparse.Namespace) -> int:
    """Run ``qvad predict``; return the exit status."""
    segments = bool(args.segments or args.rttm or args.segments_out)
    try:
        out_fmt = _format_of(args.out, "--out") if args.out else "csv"
        seg_fmt = _format_of(args.segments_out, "--segments-out") if args.segments_out else None
    except ValueError as exc:
        print(f"qvad predict: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from qvad.common.cpu_numerics import pin_cpu_numerics

    pin_cpu_numerics(args.threads)  # before any tensor work: the pipeline's CPU kernels
    _quiet_libraries()
    from qvad.detector import DEFAULT_MAX_DURATION_S, Detector
    from qvad.detector_config import DetectorConfigError
    from qvad.segments import SegmentOptions, rttm_lines

    options = SegmentOptions(window_ms=args.window_ms, hop_ms=args.hop_ms, threshold=args.threshold,
                             neg_threshold=args.neg_threshold, min_speech_ms=args.min_speech_ms,
                             min_silence_ms=args.min_silence_ms, speech_pad_ms=args.speech_pad_ms,
                             max_speech_s=args.max_speech_s, pool=args.pool)
    try:
        options.check()
        detector = Detector.from_dir(args.model_dir, device=args.device, batch_size=args.batch_size)
    except (DetectorConfigError, ValueError, OSError) as exc:
        print(f"qvad predict: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.threshold is not None:
        from dataclasses import replace

        detector.config = replace(detector.config, threshold=args.threshold)

    from qvad.audio.decode import find_audio
    from tqdm import tqdm

    paths = find_audio(args.paths)
    if not paths:
        print("qvad predict: no audio files found in " + " ".join(args.paths), file=sys.stderr)
        return EXIT_FAILED
    fields = ROW_FIELDS + (SEGMENT_FIELDS if segments else [])
    failed = 0
    results = []
    with ExitStack() as stack:
        files: list[_AtomicText] = []
        if args.out:
            target = _AtomicText(args.out)
            files.append(target)
            out_stream: TextIO = target.stream
        else:
            out_stream = sys.stdout
        writer = _RowWriter(out_stream, out_fmt, fields)
        seg_writer = None
        if seg_fmt:
            seg_target = _AtomicText(args.segments_out)
            files.append(seg_target)
            seg_writer = _RowWriter(seg_target.stream, seg_fmt, ["path", "start_s", "end_s", "duration_s", "p_speech"])
        ok = False
        try:
            show = args.progress if args.progress is not None else None
            bar = stack.enter_context(tqdm(total=len(paths), unit="file", desc="qvad predict", file=sys.stderr,
                                           disable=(not show) if show is not None else None, dynamic_ncols=True))
            for res in detector.iter_files(paths, segments=segments, options=options,
                                           max_duration_s=args.max_duration or DEFAULT_MAX_DURATION_S):
                row = res.row(segments)
                writer.write(row)
                if seg_writer is not None:
                    for start, end, p in res.segments or []:
                        seg_writer.write({"path": res.path, "start_s": start, "end_s": end,
                                          "duration_s": round(end - start, 3), "p_speech": p})
                if res.error:
                    failed += 1
                    bar.write(f"qvad predict: {res.path}: {res.error}", file=sys.stderr)
                results.append((res.path, res.segments))
                bar.update(1)
                bar.set_postfix(failed=failed, refresh=False)
            ok = True
        finally:
            for f in files:
                f.close(ok)
    if args.rttm:
        from qvad.common.atomic import write_text

        ids = _rttm_ids([p for p, _ in results])
        lines = [line for p, segs in results if segs for line in rttm_lines(ids[p], segs)]
        write_text(args.rttm, "".join(f"{line}\n" for line in lines))
    if failed:
        print(f"qvad predict: {failed} of {len(paths)} files failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def export(args: argparse.Namespace) -> int:
    """Run ``qvad export``; return the exit status."""
    if len(args.dirs) > 2:
        print(f"qvad export: expected [MODELS_DIR] OUT_DIR, got {len(args.dirs)} paths", file=sys.stderr)
        return EXIT_USAGE
    models_dir, out_dir = (args.dirs if len(args.dirs) == 2 else ["models", args.dirs[0]])
    from qvad.detector_config import DetectorConfigError
    from qvad.export.checks import ExportError
    from qvad.export.folder import export_models

    _quiet_libraries()
    project = args.project_dir or str(Path(models_dir).resolve().parent)
    try:
        result = export_models(models_dir, out_dir, merge=args.merge, force=args.force, dtype=args.dtype,
                               project_dir=project)
    except (ExportError, DetectorConfigError, OSError) as exc:  # a broken detector.json too
        print(f"qvad export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    kind = f"merged, {result.dtype}" if result.merged else "base + adapter"
    print(f"qvad export: wrote {result.out_dir} ({kind}; model card README.md)", file=sys.stderr)
    if result.replaced_files:
        print(f"qvad export: replaced the previous {result.out_dir} ({result.replaced_files} files removed)",
              file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        return predict(args)
    if args.command == "export":
        return export(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
