"""docs/operators.md names only what the repository has: files, overlays, objects, images, CLI."""

from __future__ import annotations

import re

import typer
from kuberay_v1 import KUBERAY_VERSION
from rendered import REPO, overlays, render

GUIDE = REPO / "docs" / "operators.md"


def guide() -> str:
    return GUIDE.read_text()


def code_blocks() -> str:
    """The text of the guide's fenced code blocks and `inline code`."""
    text = guide()
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline)


def test_paths_in_the_guide_exist() -> None:
    paths = set(re.findall(r"\b((?:deploy|docker|docs|examples|tests)/[\w./-]*\w)", guide()))
    assert paths, "the guide names no repository paths"
    for path in paths:
        if re.fullmatch(r"deploy/[\w-]+", path):
            continue  # kubectl's deploy/NAME (a Deployment): test_kubectl_targets_exist
        assert (REPO / path).exists(), f"docs/operators.md names {path}, which does not exist"


def test_overlays_in_the_guide_exist() -> None:
    named = set(re.findall(r"deploy/overlays/(\w+)", guide()))
    assert named == set(overlays())


def test_kuberay_version_is_the_one_checked() -> None:
    text = guide()
    assert f"ref={KUBERAY_VERSION}" in text
    assert f"--version {KUBERAY_VERSION.removeprefix('v')}" in text
    assert KUBERAY_VERSION in (REPO / "deploy" / "base" / "kustomization.yaml").read_text()
    for other in re.findall(r"ref=(v[\d.]+)|--version (\d+\.\d+\.\d+)", text):
        assert KUBERAY_VERSION.removeprefix("v") in "".join(other)


def test_built_images_are_the_ones_deployed() -> None:
    builds = re.findall(r"docker build -f (\S+) -t \$REGISTRY/([\w-]+):(\S+) \.", guide())
    assert len(builds) == 2
    deployed = {
        c.spec["image"].rpartition("/")[2] for o in overlays() for c in render(o).containers()
    }
    for dockerfile, name, tag in builds:
        assert (REPO / dockerfile).is_file(), dockerfile
        assert f"{name}:{tag}" in deployed, f"the guide builds {name}:{tag}; deployed: {deployed}"


def test_kubectl_targets_exist() -> None:
    dev, prod = render("dev"), render("prod")
    objects = {(o["kind"], o["metadata"]["name"]) for r in (dev, prod) for o in r.objects}
    head_service = f"{dev.raycluster['metadata']['name']}-head-svc"  # made by KubeRay
    kinds = {"deploy": "Deployment", "svc": "Service", "raycluster": "RayCluster"}
    targets = re.findall(r"\b(deploy|svc|raycluster)[/ ]([a-z][\w-]*)(?![\w/.-])", code_blocks())
    assert len(targets) > 5
    for short, name in targets:
        if short == "svc" and name == head_service:
            continue
        if short == "deploy" and name == "kuberay-operator":
            continue
        assert (kinds[short], name) in objects, f"{short}/{name}"
    for pod in set(re.findall(r"\b(pdistill-postgres-\d+)\b", guide())):
        assert ("StatefulSet", pod.rsplit("-", 1)[0]) in objects
    for namespace in set(re.findall(r"kubectl -n ([\w-]+)", guide())) - {"ray-system"}:
        assert ("Namespace", namespace) in objects, namespace


def test_pdistill_commands_exist_or_come_with_the_control_plane() -> None:
    from api.cli import app

    commands = set(typer.main.get_command(app).commands)
    text = code_blocks()
    named = {
        m[2]
        for m in re.finditer(r"(^|[\s`(])pdistill ([a-z][a-z-]*)", text, flags=re.M)
        if not text[: m.start(2)].endswith("-n pdistill ")  # a namespace, not the CLI
    }
    assert {"token", "submit"} <= named
    for command in named:
        assert command in commands, f"`pdistill {command}` is not a command"


def test_readme_links_the_guide() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Deploying on Kubernetes" in readme
    section = readme[readme.index("## Deploying on Kubernetes") :]
    assert "docs/operators.md" in section
