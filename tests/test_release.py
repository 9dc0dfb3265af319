"""The release workflow, linted: its structure, the files it names, and the version rule it
enforces (no actionlint here: it is a Go binary that pip would fetch from GitHub)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def release_version() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_version",
                                                  ROOT / ".github" / "release_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_place_names_the_same_version() -> None:
    module = release_version()
    found = set(module.versions().values())
    assert len(found) == 1 and None not in found, module.versions()
    (version,) = found
    assert module.mismatches(version) == []
    assert module.main([version]) == 0
    assert module.mismatches("9.9.9"), "a tag that differs is refused"
    assert module.main(["9.9.9"]) == 1
    assert module.main(["v1"]) == 2


def test_the_workflow_runs_on_version_tags_tests_first_then_pushes_images_and_chart() -> None:
    flow = workflow()
    trigger = flow.get("on") or flow.get(True)  # YAML 1.1 reads a bare `on` as True
    assert trigger == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    assert flow["permissions"] == {"contents": "read"}, "write only where a job pushes"
    jobs = flow["jobs"]
    assert jobs["images"]["needs"] == "test" and jobs["chart"]["needs"] == "images"
    test_steps = " ".join(str(step.get("run", "")) for step in jobs["test"]["steps"])
    assert "release_version.py" in test_steps and ".ci/run" in test_steps
    for name in ("images", "chart"):
        assert jobs[name]["permissions"]["packages"] == "write"
    builds = [i["dockerfile"] for i in jobs["images"]["strategy"]["matrix"]["include"]]
    assert builds == ["Dockerfile", "Dockerfile.operator"]
    for dockerfile in builds:
        assert (ROOT / dockerfile).is_file()
    chart_steps = " ".join(str(step.get("run", "")) for step in jobs["chart"]["steps"])
    assert "helm package charts/gencluster" in chart_steps
    assert (ROOT / "charts" / "gencluster" / "Chart.yaml").is_file()
    assert "helm push" in chart_steps and "oci://ghcr.io/" in chart_steps


def test_every_action_is_pinned_to_a_major_version() -> None:
    uses = re.findall(r"uses: (\S+)", WORKFLOW.read_text())
    assert uses
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", action), action
