"""`local-run` end to end on the 8x8 digits: a real (tiny) teacher, two rounds, evaluation."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from orchestrator.local import RunError, run_local
from orchestrator.spec import parse_spec

SPEC = {
    "name": "tiny",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "teacher": {"train": {"updates": 60, "batch_size": 32, "warmup_updates": 5}},
    "steps": {"start": 4, "target": 1},
    "distill": {"updates": 10, "batch_size": 16},
    "evaluation": {"samples": 64, "batch_size": 64},
}


class Quiet:
    def __init__(self):
        self.notes, self.tasks, self.counts = [], [], {}

    def note(self, text):
        self.notes.append(text)

    def task(self, description, total):
        self.tasks.append(description)
        return lambda done, total_, loss: None

    def count(self, description, total):
        self.counts[description] = [0, total]  # drawn of total

        def add(n):
            self.counts[description][0] += n

        return add


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run")
    progress = Quiet()
    report = run_local(parse_spec(SPEC), out=out, cache_dir=cache_dir, progress=progress)
    return out, report, progress


def test_report_has_every_round_and_artifacts(finished):
    out, report, progress = finished
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["dataset"] == "builtin:digits"
    assert report["fid_samples"] == 64 and report["fid_features"].startswith("classifier-")
    assert report["teacher"]["steps"] == 4 and report["teacher"]["fid"] > 0
    assert [(r["round"], r["steps"]) for r in report["rounds"]] == [(1, 2), (2, 1)]
    for r in report["rounds"]:
        assert {"fid", "ddim_fid", "train_seconds", "final_loss"} <= r.keys()
        assert r["fid"] > 0 and r["ddim_fid"] > 0
    assert (out / "fid_vs_steps.png").stat().st_size > 1000
    for name in ("teacher-4", "distilled-2", "ddim-2", "distilled-1", "ddim-1"):
        assert (out / "samples" / f"{name}.png").exists()
        with __import__("numpy").load(out / "samples" / f"{name}.npz") as z:
            assert z["images"].shape == (64, 8, 8, 1) and z["images"].dtype.name == "uint8"
    assert progress.tasks == ["teacher training", "round 1/2: 4→2 steps", "round 2/2: 2→1 steps"]
    # Each evaluation's bar counted its samples to the end.
    evaluated = ["teacher at 4", "distilled at 2", "ddim at 2", "distilled at 1", "ddim at 1"]
    assert progress.counts == {f"{e} steps: FID samples": [64, 64] for e in evaluated}


def test_checkpoints_carry_their_config(finished):
    out, _, _ = finished
    from workers.checkpoint import load_checkpoint

    state, config = load_checkpoint(str(out / "round-2" / "student.safetensors"))
    assert config["role"] == "student" and config["steps"] == 1 and config["round"] == 2
    assert config["unet"]["dropout"] == 0.0 and config["spec"]["name"] == "tiny"
    assert json.loads((out / "round-2" / "student.json").read_text()) == config
    assert state


def test_rerun_skips_finished_stages(finished, cache_dir):
    out, report, _ = finished
    mtime = (out / "round-1" / "student.safetensors").stat().st_mtime_ns
    progress = Quiet()
    again = run_local(parse_spec(SPEC), out=out, cache_dir=cache_dir, progress=progress)
    assert progress.tasks == []  # nothing trained again
    assert (out / "round-1" / "student.safetensors").stat().st_mtime_ns == mtime
    assert again == report


def test_other_spec_in_same_out_dir_is_refused(finished, cache_dir):
    out, _, _ = finished
    other = parse_spec({**SPEC, "seed": 7})
    with pytest.raises(RunError, match="holds a different campaign"):
        run_local(other, out=out, cache_dir=cache_dir, progress=Quiet())


def test_nan_round_stops_with_round_and_update_and_keeps_earlier(tmp_path, finished, cache_dir):
    src, _, _ = finished
    out = tmp_path / "run"
    # Start from the finished campaign, poison round 1's student and forget round 2: round 2
    # then distils from a NaN teacher.
    subprocess.run(["cp", "-r", str(src), str(out)], check=True)
    ckpt = out / "round-1" / "student.safetensors"
    raw = ckpt.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    state = load_file(ckpt)
    state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    save_file(state, ckpt, metadata=header)
    subprocess.run(["rm", "-r", str(out / "round-2")], check=True)
    with pytest.raises(RunError) as info:
        run_local(parse_spec(SPEC), out=out, cache_dir=cache_dir, progress=Quiet())
    msg = str(info.value)
    assert "round 2" in msg and "update 1" in msg and "nan" in msg
    assert ckpt.exists() and (out / "round-1" / "record.json").exists()
    assert (out / "teacher.safetensors").exists()
    assert not (out / "round-2" / "student.safetensors").exists()


def test_teacher_from_checkpoint_is_loaded_not_trained(tmp_path, finished, cache_dir):
    src, report, _ = finished
    teacher_uri = (src / "teacher.safetensors").as_uri()
    spec = parse_spec(
        {**SPEC, "teacher": {"checkpoint": teacher_uri}, "steps": {"start": 4, "target": 2}}
    )
    progress = Quiet()
    got = run_local(spec, out=tmp_path / "o", cache_dir=cache_dir, progress=progress)
    assert progress.tasks == ["round 1/1: 4→2 steps"]
    # Same weights, same evaluation noise: the same teacher FID.
    assert got["teacher"]["fid"] == pytest.approx(report["teacher"]["fid"], rel=1e-9)

    wrong = parse_spec(
        {**SPEC, "teacher": {"checkpoint": teacher_uri}, "diffusion": {"output": "v"}}
    )
    with pytest.raises(RunError, match="teacher.safetensors.*predicts output 'x'.*'v'"):
        run_local(wrong, out=tmp_path / "w", cache_dir=cache_dir, progress=Quiet())


def test_a_run_stopped_while_the_teacher_trains_resumes_it(tmp_path, finished, cache_dir):
    out, _, _ = finished

    class StopAtTheEnd(Quiet):  # stops at update 60, after the state saved at update 50
        def task(self, description, total):
            def on_progress(done, total_, loss):
                if done == 60:
                    raise KeyboardInterrupt

            return on_progress

    with pytest.raises(KeyboardInterrupt):
        run_local(parse_spec(SPEC), out=tmp_path, cache_dir=cache_dir, progress=StopAtTheEnd())
    assert (tmp_path / "teacher.training-state.pt").exists()
    assert not (tmp_path / "teacher.safetensors").exists()

    progress, updates = Quiet(), []
    progress.task = lambda description, total: lambda done, total_, loss: updates.append(done)
    run_local(parse_spec(SPEC), out=tmp_path, cache_dir=cache_dir, progress=progress)
    assert any(n.startswith("teacher: resuming from") for n in progress.notes)
    assert updates[0] == 60  # the teacher went on from update 50, not from 0
    assert not (tmp_path / "teacher.training-state.pt").exists()
    resumed = load_file(str(tmp_path / "teacher.safetensors"))
    whole = load_file(str(out / "teacher.safetensors"))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)  # as if it never stopped
