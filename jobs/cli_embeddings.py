"""`sparserec embeddings plan | methods | inspect`: memory-budget plans, compression methods, exports.

`embeddings plan --config FILE --output runs/<run>/plan` is the run's plan stage (`run --only plan`,
skipped when current, options override the config's embeddings section); without --config it plans
a feature_spec.json with the options alone and writes `--output` directly (no manifest).

Example:
    $ sparserec embeddings plan --spec runs/r1/rank/feature_spec.json --budget 10x --output /tmp/plan
    $ sparserec embeddings plan --config configs/sample_ctr.yaml --output runs/sample-ctr/plan
    $ sparserec embeddings methods
    $ sparserec embeddings inspect runs/r1/train/model/embeddings.pt
"""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError
from jobs.groups import embeddings_app

console = Console()

_METHODS = "dense,hashing,qr,mixed_dim,int8,int4,drop"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_budget(text: str) -> dict:
    """'10x' -> {"compression_ratio": 10.0}; '50MB' / '2MiB' / '123456' -> {"budget_bytes": n}.

    Example:
        >>> parse_budget("10x"), parse_budget("2KiB")
        ({'compression_ratio': 10.0}, {'budget_bytes': 2048})
    """
    t = text.strip().lower().replace("_", "").replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)x", t)
    if m:
        ratio = float(m.group(1))
        if ratio < 1:
            raise UserError(f"--budget {text}: a compression ratio must be at least 1x (1x = all dense); e.g. 10x")
        return {"compression_ratio": ratio}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", t)
    if not m:
        raise UserError(f"--budget {text!r}: not understood; give a ratio (10x), a size (50MB, 2GiB) or bytes (123456)")
    n = int(float(m.group(1)) * _UNITS[m.group(2) or ""])
    if n <= 0:
        raise UserError(f"--budget {text}: must be more than 0 bytes")
    return {"budget_bytes": n}


def register(app: typer.Typer) -> None:
    """Commands live in the shared `embeddings` group (jobs/groups.py); nothing to add at the top."""


@embeddings_app.command("plan")
def plan_cmd(
    spec: Path = typer.Option(None, help="feature_spec.json written by the rank stage (or its folder); with --config default: the rank folder beside --output"),
    budget: str = typer.Option(None, help="memory budget: a ratio vs. all-dense fp32 (10x), a size (50MB, 2GiB) or bytes; none = dense (with --config: the config's)"),
    output: Path = typer.Option(..., help="folder to write embedding_plan.json and plan.md into (with --config: the stage folder, e.g. runs/r1/plan)"),
    config: Path = typer.Option(None, help="a run config (YAML): plan with its embeddings section as the run's plan stage (skipped when current)"),
    dim: int = typer.Option(None, help="embedding dimension the model sees (default_dim; default 16, with --config the config's)"),
    methods: str = typer.Option(None, help=f"comma-separated methods the planner may use (default {_METHODS}, with --config the config's)"),
    max_rows: int = typer.Option(None, help="cap on rows of any one table (larger vocabularies are hashed)"),
    dsl_density: float = typer.Option(None, help="train dense tables sparse (DSL) at this density, e.g. 0.2"),
    force: bool = typer.Option(False, help="with --config: plan again even when the output is current"),
) -> None:
    """Plan embedding tables under a memory budget: rows, dim, method and DSL density per table.

    With --config it is the run's `plan` stage (`run --only plan`): the options override the config's
    `embeddings` section and `--output runs/<run>/plan` is current for `sparserec run` when they
    change nothing. Without it, the options alone make the settings and `--output` is written directly.
    """
    from pydantic import ValidationError

    from embeddings.config import DSLConfig, EmbeddingsConfig
    from embeddings.planner import plan_markdown, plan_table, plan_embeddings

    if config is None and spec is None:
        raise UserError("embeddings plan: give --spec (feature_spec.json or the rank folder), or --config with --output runs/<run>/plan.")
    base: dict = {"default_dim": 16, "methods": _METHODS.split(",")}
    if config is not None:
        from jobs.config import load_config

        run_cfg = load_config(config, check_paths=False)
        base = run_cfg.embeddings.model_dump()
    upd: dict = {k: v for k, v in (("default_dim", dim), ("max_rows", max_rows)) if v is not None}
    if methods is not None:
        upd["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    if budget:
        upd.update({"compression_ratio": None, "budget_bytes": None, **parse_budget(budget)})
    if dsl_density is not None:
        upd["dsl"] = {**DSLConfig().model_dump(), **(base.get("dsl") or {}), "enabled": True, "density": dsl_density}
    try:
        cfg = EmbeddingsConfig.model_validate({**base, **upd})
    except ValidationError as err:
        e = err.errors()[0]
        raise UserError(f"embeddings plan: option '{'.'.join(map(str, e['loc']))}': {e['msg']}") from None
    if config is not None:
        from jobs.cli_features import run_stage_command

        run_cfg.embeddings = cfg
        o = run_stage_command("plan", run_cfg, output, {"rank": spec} if spec is not None else None, force=force,
                              quiet=True, option_names={"rank": "spec"})
        from embeddings.spec import EmbeddingPlan

        plan = EmbeddingPlan.load(output / "embedding_plan.json")
        console.print(plan_table(plan))
        for note in plan.notes:
            console.print(f"  {note}", highlight=False)
        done = "unchanged, skipped" if o.status == "skipped" else "wrote"
        console.print(f"{done} {output / 'embedding_plan.json'} and {output / 'plan.md'}", highlight=False)
        return
    with console.status("planning"):
        plan = plan_embeddings(spec, cfg)
    output.mkdir(parents=True, exist_ok=True)
    plan.save(output / "embedding_plan.json")
    (output / "plan.md").write_text(plan_markdown(plan))
    console.print(plan_table(plan))
    for note in plan.notes:
        console.print(f"  {note}", highlight=False)
    console.print(f"wrote {output / 'embedding_plan.json'} and {output / 'plan.md'}", highlight=False)


@embeddings_app.command("methods")
def methods_cmd() -> None:
    """List the registered compression methods and what each stores."""
    from rich.table import Table

    from embeddings.compression import get_method, known_methods

    table = Table(title="compression methods")
    table.add_column("name")
    table.add_column("parameters")
    table.add_column("what it does")
    for name in known_methods():
        m = get_method(name)
        doc = (type(m).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, ", ".join(m.allowed_params()) or "-", doc)
    console.print(table)


@embeddings_app.command("inspect")
def inspect_cmd(path: Path = typer.Argument(..., help="an exported embeddings artifact (.pt)")) -> None:
    """Show the tables of an exported artifact: serving type, rows, dim and stored bytes."""
    import torch
    from rich.table import Table

    from embeddings.errors import ExportError
    from embeddings.export import FORMAT

    if not path.exists():
        raise ExportError(f"{path}: not found; pass the .pt file written by the export")
    try:
        art = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ExportError(f"{path}: not a readable embeddings artifact ({type(err).__name__}); re-export the model") from None
    if not isinstance(art, dict) or art.get("format") != FORMAT:
        raise ExportError(f"{path}: not a {FORMAT} artifact; re-export the model with embeddings.export")
    table = Table(title=str(path))
    for col in ("physical table", "serving", "rows", "dim", "bytes"):
        table.add_column(col, justify="left" if col in ("physical table", "serving") else "right")
    total = 0
    for name, e in art["tables"].items():
        b = sum(t.numel() * t.element_size() for k in ("weight", "scale_bias", "index_remapping") if (t := e[k]) is not None)
        total += b
        table.add_row(name, e["serving"], f"{e['rows']:,}", str(e["dim"]), f"{b:,}")
    comb = sum(t.numel() * t.element_size() for sd in art["combiners"].values() for t in sd.values())
    table.add_row("(combiners)", "fp32", "", "", f"{comb:,}")
    console.print(table)
    console.print(f"total {total + comb:,} bytes", highlight=False)
