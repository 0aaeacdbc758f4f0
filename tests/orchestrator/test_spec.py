import io

import boto3
import numpy as np
import pytest

from orchestrator.spec import SpecError, load_spec, parse_spec, plan_rounds

BASE = {"name": "t", "dataset": "builtin:digits"}


def _error(**changes) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, **changes})
    return str(info.value)


def test_defaults_and_plan():
    spec = parse_spec(
        {
            **BASE,
            "steps": {"start": 16, "target": 1},
            "distill": {"updates": 10, "last_rounds_updates": 20},
        }
    )
    plan = plan_rounds(spec)
    assert [(p.round, p.teacher_steps, p.student_steps, p.updates) for p in plan] == [
        (1, 16, 8, 10),
        (2, 8, 4, 10),
        (3, 4, 2, 20),
        (4, 2, 1, 20),
    ]


def test_cuda_graphs_switch_reaches_the_accel():
    """`resources.cuda_graphs` (default on) decides whether a GPU update is one CUDA graph."""
    on = parse_spec(BASE).resources
    off = parse_spec({**BASE, "resources": {"cuda_graphs": False}}).resources
    assert on.accel("cuda").graphs and on.accel("cuda").norm_channel_stats
    assert not off.accel("cuda").graphs and not off.accel("cuda").norm_channel_stats
    assert off.accel("cuda").compile and not off.accel("cpu").on  # the fast path stays as it was
    msg = _error(resources={"cuda_graphs": "sometimes"})
    assert "resources.cuda_graphs" in msg and "'sometimes'" in msg and "boolean" in msg


def test_non_power_of_two_steps_names_field():
    msg = _error(steps={"start": 12, "target": 1})
    assert "steps.start" in msg and "12" in msg and "power of two" in msg


def test_target_above_start_names_both():
    msg = _error(steps={"start": 4, "target": 8})
    assert "steps" in msg and "target=8" in msg and "start=4" in msg


def test_unknown_preset_lists_allowed():
    msg = _error(model={"preset": "resnet"})
    assert "model.preset" in msg and "'resnet'" in msg and "mnist-small" in msg


def test_missing_dataset_file_names_field(tmp_path):
    missing = tmp_path / "nope.npz"
    msg = _error(dataset=str(missing))
    assert "dataset" in msg and "nope.npz" in msg


def test_unknown_builtin_and_unknown_field():
    assert "builtin:mnist5k" in _error(dataset="builtin:cifar")
    msg = _error(distil={"updates": 3})
    assert "distil" in msg and "Extra inputs" in msg


def test_unknown_unet_override():
    msg = _error(model={"preset": "mnist-tiny", "overrides": {"channels": 3}})
    assert "model.overrides" in msg and "channels" in msg


def test_a_model_that_does_not_fit_the_images_names_the_presets_that_do(tmp_path):
    msg = _error(model={"preset": "cifar10"})  # attention at 16×16 on 8×8 digits
    assert "  model: preset 'cifar10' does not fit builtin:digits (1×8×8 images)" in msg
    assert "attn_resolutions" in msg and "['digits-small', 'mnist-small', 'mnist-tiny']" in msg
    odd = tmp_path / "odd.npz"
    np.savez(odd, images=np.zeros((4, 10, 10, 3), dtype=np.uint8))
    msg = _error(
        dataset=str(odd), model={"preset": "mnist-tiny", "overrides": {"ch_mult": [1, 2, 2]}}
    )
    assert "preset 'mnist-tiny' with these overrides does not fit" in msg and "3×10×10" in msg
    assert "image_size=10 is not divisible by 4" in msg
    # The default model is checked too: mnist-small halves twice.
    assert "model: preset 'mnist-small' does not fit" in _error(dataset=str(odd))


def test_a_dataset_only_loading_tells_is_checked_when_loaded(tmp_path):
    from orchestrator.local import unet_config
    from workers.data import load_dataset

    spec = parse_spec({**BASE, "dataset": "s3://bucket/digits.npz", "model": {"preset": "cifar10"}})
    with pytest.raises(SpecError, match=r"model: preset 'cifar10' does not fit builtin:digits"):
        unet_config(spec, load_dataset("builtin:digits"))
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=np.zeros((4, 8, 8), dtype=np.uint8))
    spec = parse_spec({**BASE, "dataset": "s3://bucket/digits.npz"})
    with pytest.raises(SpecError, match=r"evaluation: features 'classifier' is trained on the"):
        unet_config(spec, load_dataset(str(unlabelled)))


def test_an_s3_dataset_without_labels_is_refused_before_the_teacher_trains(settings):
    """The spec's check does not read S3; the campaign's first step, which loads the dataset,
    refuses it (the teacher used to train for nothing, then its evaluation failed)."""
    from orchestrator.stages import Campaign

    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((40, 8, 8), dtype=np.uint8))
    uri = "s3://pdistill-test/data/unlabelled.npz"
    boto3.client("s3").put_object(
        Bucket="pdistill-test", Key="data/unlabelled.npz", Body=buf.getvalue()
    )
    spec = parse_spec({**BASE, "name": "no-labels", "dataset": uri})
    with pytest.raises(SpecError, match=f"evaluation: features 'classifier' .* {uri} has none"):
        Campaign(spec, settings)
    # With features that need no labels, the same dataset is a campaign.
    assert Campaign(
        parse_spec({**BASE, "dataset": uri, "evaluation": {"features": "inception"}}), settings
    )


def test_classifier_features_need_a_dataset_with_labels(tmp_path):
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=np.zeros((4, 8, 8), dtype=np.uint8))
    msg = _error(dataset=str(unlabelled), model={"preset": "digits-small"})
    assert "  evaluation: features 'classifier' is trained on the dataset's labels" in msg
    assert "'inception'" in msg
    inception = {"features": "inception"}
    assert parse_spec({**BASE, "dataset": str(unlabelled), "evaluation": inception})


def test_missing_teacher_checkpoint_names_field(tmp_path):
    msg = _error(teacher={"checkpoint": str(tmp_path / "t.safetensors")})
    assert "teacher.checkpoint: no such file" in msg and "t.safetensors" in msg
    assert parse_spec({**BASE, "teacher": {"checkpoint": "s3://b/t.safetensors"}})


def test_load_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match=r"list\.yaml: a campaign spec is a YAML mapping"):
        load_spec(listy)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "absent.yaml")


def test_examples_are_valid():
    from pathlib import Path

    root = Path(__file__).parents[2]
    examples = sorted(
        [*root.joinpath("examples").glob("*.yaml"), *root.joinpath("bench").glob("*.yaml")]
    )
    assert examples
    for path in examples:
        load_spec(path)
