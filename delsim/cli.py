"""The ``delsim`` command: run scenarios, train the DEL pieces, print privacy tables."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

logger = logging.getLogger("delsim")

EXIT_INVALID_INPUT = 2

# Subcommands whose implementation lives in a module with configure_parser(parser) and main(args).
RECIPE_COMMANDS = {
    ("train", "lm"): ("delsim.llm.train_lm", "train the embedded default causal LM and its tokenizer"),
    ("train", "projection"): ("delsim.llm.train_projection", "train the DEL encoder and decoder with the LM frozen"),
    ("train", "soft-prompt"): ("delsim.llm.train_soft_prompt", "train a soft prompt for one privacy configuration"),
    ("privacy", "table"): ("delsim.privacy.table", "print epsilon by GDP closed form, by the ledger and exactly"),
    ("evaluate", "utility"): ("delsim.llm.evaluate", "measure perplexity and COH with and without privacy"),
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120] or "point"


def _print_summary(summary: dict, out_dir: Path) -> None:
    latency = summary["latency_s"]
    privacy = summary["privacy"]

    def fmt(value, unit="", digits=3):
        return "n/a" if value is None else f"{value:.{digits}g}{unit}"

    lines = [
        f"scenario {summary['scenario']} (seed {summary['seed']}): {summary['completed']}/{summary['requests']} requests completed, "
        f"{summary['rejected']} rejected, {summary['failed']} failed",
        f"  latency   p50 {fmt(latency['p50'], ' s')}  p95 {fmt(latency['p95'], ' s')}  p99 {fmt(latency['p99'], ' s')}  "
        f"TTFT p50 {fmt(summary['ttft_s']['p50'], ' s')}",
        f"  uplink    {summary['uplink_bytes_total']} bytes, {fmt(summary['uplink_bytes_per_token'], ' bytes/token')}; "
        f"downlink {summary['downlink_bytes_total']} bytes",
        f"  utility   perplexity of reference continuations {fmt(summary['perplexity'])}"
        + ("" if summary["coherence_mean"] is None else f", COH {fmt(summary['coherence_mean'])}")
        + f", soft prompt {'used' if summary['soft_prompt_used'] else 'not used'}",
        f"  privacy   per-user max mu {fmt(privacy['mu_max'])}, epsilon at delta={privacy['delta']:g}: "
        f"GDP {fmt(privacy['epsilon_gdp_max'])}, ledger {fmt(privacy['epsilon_ledger_max'])}, exact {fmt(privacy['epsilon_exact_max'])}"
        + (f" (GDP understates for {privacy['users_where_gdp_understates']} users)" if privacy["users_where_gdp_understates"] else "")
        + (
            f"; the {privacy['ledger_fallbacks_to_closed_form']} accounts past the accountant's range use the GDP closed form"
            if privacy.get("ledger_fallbacks_to_closed_form")
            else ""
        ),
    ]
    for name, figures in summary["by_device_class"].items():
        lines.append(f"  {name:<9} {figures['completed']} completed, latency p50 {fmt(figures['latency_s']['p50'], ' s')}, p95 {fmt(figures['latency_s']['p95'], ' s')}")
    lines.append(f"  wrote {out_dir}/ (requests, users, summary.json, manifest.json) in {summary['wall_s']:.0f} s wall time")
    print("\n".join(lines))


def _setup_problems(points: list) -> list[str]:
    """Return the run-setup problems (artifacts, model, dataset, arrivals) of every sweep point."""
    from delsim.runtime.setup import RunSetupError, check_run_setup

    problems = []
    for label, point in points:
        try:
            check_run_setup(point)
        except RunSetupError as error:
            problems.append(f"{'sweep point ' + label + ': ' if label else ''}{error}")
    return problems


def command_run(args: argparse.Namespace) -> int:
    """Validate a scenario, run it (or every sweep point) and print a summary."""
    from delsim.runtime.driver import run_scenario
    from delsim.runtime.setup import RunSetupError
    from delsim.scenario import ScenarioError, expand_sweep, load_scenario

    try:
        scenario = load_scenario(args.scenario)
        points = expand_sweep(scenario)
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT

    if args.seed is not None:
        if args.seed < 0:
            print(f"error: --seed: invalid value {args.seed}. Fix: pass a non-negative integer", file=sys.stderr)
            return EXIT_INVALID_INPUT
        points = [(label, point.model_copy(update={"seed": args.seed})) for label, point in points]
    out_dir = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    # Every sweep point is checked before the first one runs, so a bad point loses no work.
    problems = _setup_problems(points)
    if out_dir.exists() and not out_dir.is_dir():
        problems.append(f"--out: {str(out_dir)!r} exists and is not a folder. Fix: pass a folder path")
    if problems:
        print(f"error: invalid scenario {args.scenario}:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return EXIT_INVALID_INPUT
    existing = out_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        print(f"error: --out: cannot create {str(out_dir)!r} because {str(existing)!r} is not a writable folder. Fix: pass a writable folder", file=sys.stderr)
        return EXIT_INVALID_INPUT

    index = []
    for number, (label, point) in enumerate(points):
        target = out_dir if not label else out_dir / f"{number:03d}-{_slug(label)}"
        try:
            result = run_scenario(point, target, address=args.address, scenario_path=str(args.scenario))
        except RunSetupError as error:
            print(f"error: invalid scenario {args.scenario}:\n  - {error}", file=sys.stderr)
            return EXIT_INVALID_INPUT
        if not args.quiet:
            if label:
                print(f"[sweep point {number}: {label}]")
            _print_summary(result.summary, target)
        index.append({"point": number, "label": label, "out_dir": str(target)})

    if len(points) > 1:
        (out_dir / "sweep.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


def command_validate(args: argparse.Namespace) -> int:
    """Validate a scenario file without running it."""
    from delsim.scenario import ScenarioError, expand_sweep, load_scenario

    try:
        points = expand_sweep(load_scenario(args.scenario))
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    problems = _setup_problems(points)
    if problems:
        print(f"error: invalid scenario {args.scenario}:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(f"{args.scenario}: valid ({len(points)} run{'s' if len(points) != 1 else ''})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="delsim", description="Simulate DEL private split inference at scale on Ray.")
    parser.add_argument("--log-level", default="WARNING", help="logging level: DEBUG, INFO, WARNING or ERROR (default WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a scenario file end to end")
    run.add_argument("scenario", help="path of the scenario YAML file")
    run.add_argument("--out", help="output folder (default runs/<scenario name>-<timestamp>)")
    run.add_argument("--seed", type=int, help="seed that overrides the scenario's seed")
    run.add_argument("--address", help="address of an existing Ray cluster to join (default: start Ray locally)")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")
    run.set_defaults(handler=command_run)

    validate = commands.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", help="path of the scenario YAML file")
    validate.set_defaults(handler=command_validate)

    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (module, help_text) in RECIPE_COMMANDS.items():
        if group not in groups:
            groups[group] = commands.add_parser(group, help=f"{group} commands").add_subparsers(dest=f"{group}_command", required=True)
        sub = groups[group].add_parser(name, help=help_text)
        sub.set_defaults(recipe_module=module)
        _configure_recipe(sub, module)
    return parser


def _configure_recipe(parser: argparse.ArgumentParser, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parser.set_defaults(recipe_error=f"{module_name} is not available: {error}")
        return
    module.configure_parser(parser)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``delsim`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if getattr(args, "recipe_error", None):
        print(f"error: {args.recipe_error}", file=sys.stderr)
        return 1
    if hasattr(args, "recipe_module"):
        return int(importlib.import_module(args.recipe_module).main(args) or 0)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
