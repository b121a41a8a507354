"""Benchmark: Progressive DeepSSM against DeepSSM on the hippocampus project (issue 6).

Runs ``shapeworks-progressive compare`` on ``output/hippocampus/hippocampus.swproj`` (made
by the hippocampus use case: 154 train, 33 val, 33 test subjects, 1024 particles in
scales 128/256/512/1024) with a stated budget, then writes the committed results:

``benchmarks/results/hippocampus_compare.md``   table, targets, budget, machine, commit
``benchmarks/results/hippocampus_compare.csv``  the table (mean and std across seeds)
``benchmarks/results/hippocampus_compare.json`` every number per run, plus the above
``benchmarks/results/hippocampus_compare.png``  test surface distance per model

Budget (default, what the committed results used): all eight models, 16 epochs each
(progressive variants 2 / 2 / 2 + 10, one scale added per stage; single-scale 16;
Base-DeepSSM and its surface variant 15 + 1 fine-tuning; TL-DeepSSM 7 autoencoder / 7
T-flank / 2 joint); seeds 0, 1, 2 for ``deepssm`` and ``progressive`` (the two the targets
compare, spread included, trained first) and seed 0 for the six others; default config
(grid spacing 1.5 mm); every CPU core (``run.num_threads``). 46 minutes on the 2-core AMD
EPYC it was measured on (Base-DeepSSM about 20 s per epoch there). Runs live in
``output/hippocampus/progressive_runs/compare_benchmark`` and are reused when the script
is run again (a killed benchmark continues where it stopped; more seeds train only the
new ones).

Usage (from the repository root)::

    .venv/bin/python benchmarks/compare_hippocampus.py            # the full benchmark
    .venv/bin/python benchmarks/compare_hippocampus.py --smoke    # 1 epoch, 2 models, 1 seed

``--smoke`` checks the whole pipeline on the real data in minutes; its files are
``benchmarks/results/hippocampus_compare_smoke.*`` and say they are a smoke run. Another
``--epochs`` budget writes ``hippocampus_compare_<E>ep.*`` and keeps its runs in
``compare_benchmark_<E>ep``, beside (never over) the default budget's::

    .venv/bin/python benchmarks/compare_hippocampus.py --epochs 72 \
        --models deepssm,progressive --seeds 3     # the pair at the demo's 72 epochs
    .venv/bin/python benchmarks/compare_hippocampus.py --pca-samples 300 \
        --models deepssm,progressive --seeds 1     # with ShapeWorks' PCA augmentation
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_PROJECT = REPO / "output" / "hippocampus" / "hippocampus.swproj"
# The pair the targets compare first, so a benchmark cut short still answers them.
ALL_MODELS = ("deepssm,progressive,tl-deepssm,single-scale,progressive-no-surface,"
              "progressive-no-seg,progressive-shallow,deepssm-surface")
DEFAULT_EPOCHS = 16
DEFAULT_SEEDS = "1,deepssm=3,progressive=3"

logger = logging.getLogger("benchmarks.compare_hippocampus")


def git_state() -> dict:
    """Commit of the working tree and whether tracked files differ from it."""
    def git(*args):
        completed = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                   check=False)
        return completed.stdout.strip() if completed.returncode == 0 else None

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "tracked_files_changed": None if changed is None else len(changed.splitlines())}


def results_stem(project: Path) -> str:
    """How result files start: ``hippocampus`` for the default project, else its stem.

    So a run on another project never writes over the committed hippocampus results.
    """
    return "hippocampus" if project.resolve() == DEFAULT_PROJECT.resolve() else project.stem


def trained_at(runs: list[dict]) -> str:
    """Which commits trained the runs, e.g. "`abc1234` (6), not recorded (3)"."""
    counts: dict[str, int] = {}
    for run in runs:
        commit = (run.get("trained_with") or {}).get("commit")
        label = f"`{commit[:7]}`" if commit else "a commit not recorded"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{label} ({count})" for label, count in counts.items())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT,
                        help=f"hippocampus project (default: {DEFAULT_PROJECT})")
    parser.add_argument("--models", default=None, help=f"default: {ALL_MODELS}")
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {DEFAULT_EPOCHS}")
    parser.add_argument("--seeds", default=None, metavar="N[,MODEL=N...]",
                        help=f"seed counts (default: {DEFAULT_SEEDS}: three seeds for the "
                             "two models the targets compare, one for the ablations)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads per run (default: every core)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="training device (default: cpu; prediction is always on CPU)")
    parser.add_argument("--pca-samples", type=int, default=0, metavar="N",
                        help="train every model with N PCA-augmented samples added to the "
                             "training split (KDE sampler, as ShapeWorks DeepSSM); results "
                             "in *_pca<N> files (default: 0, none)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 epoch, deepssm and progressive, 1 seed; *_smoke result files")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from shapeworks_progressive.compare import compare, format_markdown

    project = args.project.resolve()
    if not project.is_file():
        print(f"error: {project} not found; make it first with the hippocampus use case "
              "(see README)", file=sys.stderr)
        return 2
    smoke = args.smoke
    models = args.models or ("deepssm,progressive" if smoke else ALL_MODELS)
    epochs = args.epochs or (1 if smoke else DEFAULT_EPOCHS)
    seeds = args.seeds or ("1" if smoke else DEFAULT_SEEDS)
    # Another epoch budget gets its own result files and run folders (compare refuses to
    # reuse a folder whose runs were trained with other settings); another project gets
    # result files named after it, never over the committed hippocampus results
    suffix = "_smoke" if smoke else ("" if epochs == DEFAULT_EPOCHS else f"_{epochs}ep")
    if args.pca_samples:
        suffix += f"_pca{args.pca_samples}"
    name = f"{results_stem(project)}_compare{suffix}"
    config = {"run": {"num_threads": int(args.threads), "device": args.device}}
    if args.pca_samples:
        config["augment"] = {"pca_samples": int(args.pca_samples), "pca_sampler": "kde"}
    out_dir = project.parent / "progressive_runs" / ("compare_smoke" if smoke
                                                     else f"compare_benchmark{suffix}")

    # Run (or continue) the comparison, with the code as it is now
    git_at_start = git_state()
    started = time.perf_counter()
    result = compare(project, models, seeds=seeds, config=config, out_dir=out_dir,
                     epochs=epochs, device=args.device, predict_device="cpu", progress=False)
    wall = time.perf_counter() - started

    # Results with the machine, date and commit
    content = json.loads(result.json_path.read_text(encoding="utf-8"))
    content["benchmark"] = {
        "script": "benchmarks/compare_hippocampus.py", "smoke": smoke,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "budget": {"models": models.split(","), "epochs": epochs, "seeds": seeds,
                   "threads": args.threads, "device": args.device,
                   "pca_samples": int(args.pca_samples)},
        "git": git_at_start, "git_at_end": git_state(),
        "wall_seconds_this_call": round(wall, 1),
        "runs_trained_this_call": result.trained,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    git = content["benchmark"]["git"]
    runs = content["runs"]
    # A resumed run's wall time covers only the process that finished it; its epochs'
    # own seconds cover all of it.
    all_runs_minutes = sum(max(float(run.get("train_wall_seconds") or 0),
                               float(run.get("train_seconds") or 0)) for run in runs) / 60
    header = [
        "<!-- written by benchmarks/compare_hippocampus.py; do not edit by hand -->",
        f"> {'SMOKE RUN (pipeline check only, not the benchmark): ' if smoke else ''}"
        f"budget {epochs} epochs per model, seed counts `{seeds}`, "
        f"{args.pca_samples} PCA-augmented training samples, {args.threads} CPU "
        f"thread(s), training on {args.device}; tables written at commit `{git['commit']}` "
        f"({git['tracked_files_changed']} tracked file(s) changed); "
        f"{content['machine']['summary']}; {content['date']}; {len(runs)} runs, "
        f"{all_runs_minutes:.0f} min of training in all ({len(result.trained)} run(s) and "
        f"{wall / 60:.0f} min in this call, the others reused); runs trained at "
        f"{trained_at(runs)}.", "",
    ]
    markdown = "\n".join(header) + format_markdown(content)
    (RESULTS / f"{name}.md").write_text(markdown, encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps(content, indent=1) + "\n",
                                          encoding="utf-8")
    shutil.copyfile(result.csv_path, RESULTS / f"{name}.csv")
    shutil.copyfile(result.figure_path, RESULTS / f"{name}.png")
    print(markdown)
    print(f"results: {RESULTS / name}.md/.csv/.json/.png (runs in {out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
