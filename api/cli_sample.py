"""`pdistill sample CHECKPOINT`: images from a distilled student (or a teacher), in its steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from api.cli_errors import err, fail

console = Console(soft_wrap=True)  # a path or an id is never cut in two


def _png_path(out: Path) -> Path:
    """The grid's path: `out` itself (a .png), or `samples.png` in a directory."""
    out = out.expanduser()
    if out.is_dir():
        return out / "samples.png"
    if out.suffix.lower() != ".png":
        raise fail(
            f"--out: {str(out)!r} is neither a directory nor a .png path (the grid is a PNG; "
            "every image goes to the .npz beside it)",
            2,
        )
    return out


def sample(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT",
            help="a pdistill .safetensors path, file:// or s3:// URI (pdistill fetch gives one)",
        ),
    ],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="how many images")] = 64,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="DDIM steps (default: the checkpoint's, a student's own)"),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="seed of the starting noise: same seed, same images")
    ] = 0,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="the grid PNG (or a directory); all images go to NAME.npz beside it"
        ),
    ] = Path("samples.png"),
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 256,
) -> None:
    """Draw images from a student's or teacher's checkpoint, in its own steps.

    Writes a PNG grid of the first 64 and every image as uint8 to the .npz beside it (array
    `images`, [N, H, W, C]). On a GPU when there is one (bf16, channels_last)."""
    png = _png_path(out)
    # torch loads only for this command (the client commands stay fast).
    from workers.accel import choose, place
    from workers.checkpoint import CheckpointError, load_unet
    from workers.evaluate import eval_noise, sample_images
    from workers.images import save_samples
    from workers.parameterization import MODEL_OUTPUTS

    try:
        net, config = load_unet(checkpoint)
    except CheckpointError as exc:
        raise fail(str(exc), 2) from exc
    output = (config.get("diffusion") or {}).get("output")
    if output not in MODEL_OUTPUTS:
        raise fail(
            f"{checkpoint!r}: its config's diffusion.output is {output!r}, not one of "
            f"{MODEL_OUTPUTS}",
            2,
        )
    own = config.get("steps")
    if steps is None:
        if not isinstance(own, int):
            raise fail(f"{checkpoint!r}: its config gives no step count; pass --steps", 2)
        steps = own
    role, k = config.get("role", "model"), config.get("round")
    what = f"round {k} student" if role == "student" and k else str(role)
    if isinstance(own, int) and steps != own:
        err.print(
            f"note: the {what} was made for {own}-step sampling; sampling in {steps}",
            highlight=False,
        )
    # `place`, not `prepare`: no compile, which pays off only over many thousands of images and
    # takes minutes first; and no graph, so the norms keep their per-group statistics.
    accel = choose("auto", graphs=False)
    place(net, accel)
    u = net.config
    noise = eval_noise(count=count, shape=(u.in_channels, u.image_size, u.image_size), seed=seed)
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=err, transient=True, disable=not err.is_interactive) as bar:
        task = bar.add_task("sampling", total=count)
        images = sample_images(
            net,
            noise=noise,
            num_steps=steps,
            output=output,
            batch_size=batch_size,
            on_batch=lambda n: bar.advance(task, n),
        )
    seconds = time.perf_counter() - start
    npz = png.with_suffix(".npz")
    png.parent.mkdir(parents=True, exist_ok=True)
    save_samples(images, npz_path=npz, png_path=png)
    console.print(
        f"{count} images from the {what} in {steps} steps (seed {seed}) on {accel.device.type}, "
        f"{seconds:.1f} s: {png} (grid of {min(count, 64)}), {npz}",
        highlight=False,
        soft_wrap=True,
    )
