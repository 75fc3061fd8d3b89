"""Commands that put a run's model to use: export, predict, serve.

Each add_NAME(sub, parents) registers its command's parser right above the cmd_NAME(args, store) it runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED_FILES, Rejected
from core.runs.derived import QUANTIZE_KINDS, SERVING_BACKENDS
from core.runs.store import RunStore


def _predictor(args, store: RunStore):
    from core.serving.inference import Predictor
    store.existing_run_dir(args.run_id)     # RunNotFound / InvalidRunId -> exit 2
    try:
        return Predictor(store, args.run_id, backend=args.backend)
    except (FileNotFoundError, ValueError) as error:
        raise Rejected(str(error))


def add_export(sub, parents) -> None:
    export = sub.add_parser("export", parents=parents, help="export best.pt to ONNX (and int8, TorchScript)")
    export.add_argument("run_id")
    export.add_argument("--quantize", nargs="?", const="dynamic", choices=QUANTIZE_KINDS,
                        help="also write an int8 model: dynamic (weights) or static (weights and activations, "
                             "calibrated on training images; fastest on CPU)")
    export.add_argument("--torchscript", action="store_true", help="also write model.ts.pt")
    export.set_defaults(func=cmd_export)


def cmd_export(args, store: RunStore) -> int:
    from core.serving.export import ExportError, export_run
    store.existing_run_dir(args.run_id)
    try:
        report = export_run(store, args.run_id, quantize=args.quantize, torchscript=args.torchscript)
    except (FileNotFoundError, ValueError) as error:     # ValueError: best.pt is not a checkpoint we read
        raise Rejected(str(error))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    parity = report["parity_max_abs_diff"]
    print(f"parity check: max abs difference ONNX vs torch {parity['random']:.2e} (random inputs), "
          f"{parity['real']:.2e} (val inputs); tolerance {report['tolerance']:g}: ok")
    for name, variant in report["variants"].items():
        print(f"{name:<17} {variant['file']:<24} {variant['size_mb']:8.2f} MB   val acc {variant['val_acc']:.4f}")
    return EXIT_OK


def add_predict(sub, parents) -> None:
    predict = sub.add_parser("predict", parents=parents, help="top-k classes of image files")
    predict.add_argument("run_id")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--backend", choices=tuple(SERVING_BACKENDS), default="torch")
    predict.add_argument("--explain", metavar="DIR",
                         help="also write each file's Grad-CAM over the image as DIR/NAME.gradcam.png (where the "
                              "model looks for the class it predicts), named in its JSON line")
    predict.set_defaults(func=cmd_predict)


def cmd_predict(args, store: RunStore) -> int:
    """One JSON object per line per file, a refused file's included; exit 3 when some were refused."""
    from core.data.images import ImageRefused, read_image_file
    predictor = _predictor(args, store)
    explainer = _explainer(args, store) if args.explain else None
    refused, written = 0, set()
    for name in args.files:
        try:
            data = read_image_file(name)
            result = predictor.predict(data, top_k=args.top_k)
        except ImageRefused as error:       # missing, unreadable or too large a file
            result = {"error": str(error)}
        refused += "error" in result
        if explainer is not None and "error" not in result:
            result.update(_explain(explainer, data, Path(name), Path(args.explain), written))
        print(json.dumps({"file": name, **result}), flush=True)
    return EXIT_REFUSED_FILES if refused else EXIT_OK


def _explainer(args, store: RunStore):
    """The run's Grad-CAM and the folder its maps go to, checked before any prediction."""
    from core.serving.explain import Explainer
    folder = Path(args.explain)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Rejected(f"cannot write the Grad-CAM maps to {folder}: {error.strerror or error}")
    return Explainer(store.checkpoint_path(args.run_id, "best"))


def _explain(explainer, data: bytes, source: Path, folder: Path, written: set) -> dict:
    """{"explanation": PNG path, "explained_class"} or {"explanation_error"} (a model without
    convolutions has no map)."""
    from core.models.gradcam import CannotExplain
    from core.serving.explain import save_png
    try:
        pixels = explainer.pixels(data)
        explanation = explainer.explain(pixels)
    except CannotExplain as error:
        return {"explanation_error": str(error)}
    stem, n = source.stem, 2
    while stem in written:           # two files called the same in different folders
        stem, n = f"{source.stem}-{n}", n + 1
    written.add(stem)
    target = folder / f"{stem}.gradcam.png"
    save_png(explainer.overlay(pixels, explanation), target)
    return {"explanation": str(target), "explained_class": explainer.classes[explanation.target]}


def add_serve(sub, parents) -> None:
    serve = sub.add_parser("serve", parents=parents, help="HTTP prediction service (ONNX Runtime)")
    serve.add_argument("run_id")
    serve.add_argument("--port", default="8000", help="1-65535 (checked before the model loads)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--backend", choices=tuple(SERVING_BACKENDS), default="onnx")
    serve.add_argument("--max-mb", type=int, default=10, help="request size limit in MB")
    serve.add_argument("--concurrency", type=int, help="predictions at once (default: the CPU count); "
                                                         "twice as many more may wait, beyond that 503")
    serve.add_argument("--body-timeout", type=float, metavar="SECONDS",
                       help="408 for a request whose body takes longer to arrive (default 10)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args, store: RunStore) -> int:
    from core.serving.service import Limits, listen, serve
    given = {"concurrency": args.concurrency, "body_timeout_s": args.body_timeout}
    limits = Limits(max_bytes=args.max_mb * 1024 * 1024, **{k: v for k, v in given.items() if v is not None})
    if limits.concurrency < 1 or limits.body_timeout_s <= 0 or args.max_mb < 1:
        raise Rejected("--concurrency, --body-timeout and --max-mb must be positive")
    try:
        listener = listen(args.host, args.port)       # before the model loads: a bad port fails at once
    except ValueError as error:
        raise Rejected(str(error))
    with listener:
        predictor = _predictor(args, store)
        host, port = listener.getsockname()[:2]
        print(f"serving {args.run_id} ({args.backend}) on http://{host}:{port}: POST /predict "
              f"(multipart field 'file'), GET /health; {limits.concurrency} predictions at once, "
              f"{limits.max_in_flight} requests in flight", flush=True)
        serve(predictor, args.run_id, listener, limits)
    return EXIT_OK
