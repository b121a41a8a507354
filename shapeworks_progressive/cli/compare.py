"""``shapeworks-progressive compare PROJECT``: Progressive DeepSSM against DeepSSM, side by side.

Trains every model variant for every seed on the same prepared data (or reuses finished
runs), predicts the test split, evaluates it and writes ``compare.md``, ``compare.csv``,
``compare.json`` and ``compare_surface_distance.png`` (see
:mod:`shapeworks_progressive.compare`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]

_ALL_MODELS = ("deepssm,tl-deepssm,single-scale,progressive,progressive-no-seg,"
               "progressive-shallow,progressive-no-surface,deepssm-surface")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="train, predict and evaluate several models and seeds; one comparison table",
        description=(
            "Compare Progressive DeepSSM, its ablations and the DeepSSM baselines on the "
            "project's split: each model and seed is trained with the same epoch budget on "
            "the same prepared data (finished runs are reused), its test split predicted "
            "and evaluated; writes a Markdown and CSV table (mean and std across seeds), a "
            "JSON with every number, a figure, and whether Progressive DeepSSM meets its "
            "targets against Base-DeepSSM (test surface distance >= 15% lower, a smaller "
            "spread across seeds, <= 1.5 x the training time per epoch, prediction under "
            "1 s per subject). Every model trains for every seed: with the defaults (8 "
            "models, 3 seeds, 90 epochs) that is hours on a laptop CPU; --models, --seeds "
            "and --epochs make it smaller."
        ),
    )
    parser.add_argument("project", type=Path, help="the .swproj or .xlsx project file")
    parser.add_argument("--models", default=_ALL_MODELS,
                        help=f"comma-separated model variants (default: {_ALL_MODELS})")
    parser.add_argument("--seeds", default="3", metavar="N[,MODEL=N...]",
                        help="seeds 0..N-1 per model (default: 3); MODEL=N items give one "
                             "model its own count and the models not named get the bare N "
                             "(1 when there is none), e.g. 1,deepssm=3,progressive=3")
    parser.add_argument("--config", type=Path, default=None,
                        help="base training JSON config; missing keys take the defaults")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="comparison folder (default: <project folder>/progressive_runs/"
                             "compare)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="total epochs of every model (default: the config's "
                             "progressive schedule, 90 with the defaults)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="training device (overrides the config's run.device)")
    parser.add_argument("--predict-device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="prediction device (default: cpu, where the speed target is)")
    parser.add_argument("--warp-method", choices=("displacement", "shapeworks"),
                        default="displacement", help="mesh warp used for surface distances")
    parser.add_argument("--retrain-changed", action="store_true",
                        help="train again, in place, runs in DIR that were trained with "
                             "other settings (another --epochs, config or data); without "
                             "it compare keeps them and stops before any training")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..compare import compare

    result = compare(args.project, args.models, seeds=args.seeds, config=args.config,
                     out_dir=args.out, epochs=args.epochs, device=args.device,
                     predict_device=args.predict_device, warp_method=args.warp_method,
                     retrain_changed=args.retrain_changed, progress=args.progress)
    print(result.markdown_path.read_text(encoding="utf-8"))
    reused = len(result.runs) - len(result.trained)
    print(f"{len(result.trained)} run(s) trained, {reused} reused, in {result.out_dir}")
    print(f"table: {result.markdown_path}, {result.csv_path}")
    print(f"everything: {result.json_path}; figure: {result.figure_path}")
    return 0
