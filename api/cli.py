"""The `pdistill` command line."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli_errors import fail

app = typer.Typer(help="Progressive distillation of diffusion models.", no_args_is_help=True)
console = Console(soft_wrap=True)  # a path or an id is never cut in two
DEFAULT_CACHE = Path.home() / ".cache" / "pdistill"


@app.callback()
def _root() -> None:
    """pdistill: distil a many-step diffusion teacher into a few-step student."""


def round_table(report: dict[str, Any]) -> Table:
    t = report["teacher"]
    table = Table(
        title=f"{report['dataset']}: FID "
        f"({report['fid_features']}, {report['fid_samples']} samples)"
    )
    for col in ("round", "steps", "distilled FID", "DDIM FID", "train s", "final loss"):
        table.add_column(col, justify="right")
    table.add_row(
        "teacher",
        str(t["steps"]),
        f"{t['fid']:.2f}",
        f"{t['fid']:.2f}",
        f"{t['train_seconds']:.0f}",
        f"{t['final_loss']:.4g}",
    )
    for r in report["rounds"]:
        table.add_row(
            str(r["round"]),
            str(r["steps"]),
            f"{r['fid']:.2f}",
            f"{r['ddim_fid']:.2f}",
            f"{r['train_seconds']:.0f}",
            f"{r['final_loss']:.4g}",
        )
    return table


@app.command("local-run")
def local_run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="campaign spec")],
    out: Annotated[Path, typer.Option("--out", help="output directory (resumable)")],
    cache_dir: Annotated[
        Path, typer.Option(help="cache for feature networks and reference statistics")
    ] = DEFAULT_CACHE,
) -> None:
    """Run a whole campaign in this process (no Ray): teacher, every halving round, evaluation."""
    # torch and the ML stack load only for the commands that train (the client commands stay fast).
    from api.progress import RichProgress
    from orchestrator.local import RunError, run_local
    from orchestrator.spec import SpecError, load_spec
    from workers.checkpoint import CheckpointError
    from workers.data import DatasetError
    from workers.features import FeatureNetError

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise fail(exc, 2) from exc
    try:
        with RichProgress(console) as progress:
            report = run_local(spec, out=out, cache_dir=cache_dir, progress=progress)
    except SpecError as exc:  # what only the loaded data could tell (an s3:// dataset's shape)
        raise fail(exc, 2) from exc
    except (RunError, DatasetError, CheckpointError, FeatureNetError) as exc:
        raise fail(exc, 1) from exc
    console.print(round_table(report))
    console.print(f"report: {out / 'report.json'}   plot: {out / 'fid_vs_steps.png'}")


@app.command("run")
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="campaign spec")],
    out: Annotated[
        Path | None, typer.Option("--out", help="also write report.json and the plot here")
    ] = None,
) -> None:
    """Run a campaign on Ray: the cluster at PDISTILL_RAY_ADDRESS, or a local one started now."""
    from api.cli_server import refuse_unreachable_storage
    from api.progress import say
    from orchestrator.campaign import run_campaign
    from orchestrator.ray_cluster import connect, short_of
    from orchestrator.report import plot_fid_vs_steps
    from orchestrator.settings import Settings
    from orchestrator.spec import SpecError, load_spec
    from orchestrator.stages import StageError
    from orchestrator.storage import StorageError
    from workers.checkpoint import CheckpointError
    from workers.data import DatasetError
    from workers.features import FeatureNetError

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise fail(exc, 2) from exc
    settings = Settings()
    refuse_unreachable_storage(spec.storage or settings.storage_uri)  # before a Ray head starts
    with connect(settings) as where:
        say(
            console,
            f"campaign {spec.name} on {where}; storage {spec.storage or settings.storage_uri}",
        )
        if (why := short_of(spec)) is not None:
            if not settings.ray_address:  # a Ray of this machine's size: it would wait forever
                raise fail(
                    f"resources: {why}. Lower resources.workers or "
                    "resources.cpus_per_worker/gpus_per_worker, or set PDISTILL_RAY_ADDRESS to "
                    "a larger cluster",
                    2,
                )
            say(console, f"waiting for the cluster to grow: {why}")
        try:
            report = run_campaign(spec, settings, on_status=partial(say, console))
        except SpecError as exc:
            raise fail(exc, 2) from exc
        except (StageError, StorageError, DatasetError, CheckpointError, FeatureNetError) as exc:
            raise fail(exc, 1) from exc
    console.print(round_table(report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        plot_fid_vs_steps(out / "fid_vs_steps.png", report)
        console.print(f"report: {out / 'report.json'}   plot: {out / 'fid_vs_steps.png'}")


def _register() -> None:
    from api import cli_client, cli_sample, cli_server, demo

    app.command("serve")(cli_server.serve)
    app.command("demo")(demo.demo)
    app.add_typer(cli_server.token_app, name="token")
    for name in ("submit", "status", "watch", "cancel", "logs", "fetch"):
        app.command(name)(getattr(cli_client, name))
    app.command("sample")(cli_sample.sample)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
