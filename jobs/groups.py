"""Command groups of the `sparserec` CLI, shared by the `jobs/cli_*.py` modules that fill them."""

from __future__ import annotations

import typer

features_app = typer.Typer(help="Spark feature builds: ingest, vocab, sessions, quality, rank; Feast store.", no_args_is_help=True)
embeddings_app = typer.Typer(help="Embedding plans, compression methods, exports.", no_args_is_help=True)
runs_app = typer.Typer(help="Past runs: list and show.", no_args_is_help=True)

GROUPS = {"features": features_app, "embeddings": embeddings_app, "runs": runs_app}
