"""A model the user brings (spec.model.format torchscript | export, spec.model.entrypoint): the
loaders, logits vs probabilities, the class-count check, the score step and merge with it, and
the scorer copied into a user's image (numpy, torch and the standard library only)."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cogwork_trainer.labeling import install_scorer, merge, prelabel
from cogwork_trainer.labeling.config import parse
from cogwork_trainer.labeling.pool import load_pool
from cogwork_trainer.labeling.user_model import (
    UserModel,
    load_entrypoint,
    load_export,
    load_torchscript,
)
from torch import nn

# torch 2.x deprecates TorchScript (warns on trace/save/load); users still bring such files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

USER_CODE = Path(__file__).resolve().parents[3] / "examples" / "user-code"
if str(USER_CODE) not in sys.path:
    sys.path.insert(0, str(USER_CODE))
import label_model  # noqa: E402

X = np.random.default_rng(0).normal(size=(10, 4, 4)).astype(np.float32)


def tiny(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).eval()


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def logits_of(net: nn.Module, x: np.ndarray = X) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def save_torchscript(net: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.trace(net, torch.from_numpy(X[:2])), str(path))
    return path


def test_torchscript_logits_get_a_softmax(tmp_path: Path) -> None:
    net = tiny()
    model = load_torchscript(str(save_torchscript(net, tmp_path / "m.pt"))).with_classes(
        ("a", "b", "c"))
    probs = model.predict_proba(X, batch_size=3)  # batches of 3, 3, 3, 1
    assert probs.dtype == np.float32 and probs.shape == (10, 3)
    np.testing.assert_allclose(probs, softmax(logits_of(net)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "static-batch"])
def test_export_program_scores_any_batch(tmp_path: Path, dynamic: bool) -> None:
    net = tiny()
    shapes = {"input": {0: torch.export.Dim("batch")}} if dynamic else None
    program = torch.export.export(net, (torch.from_numpy(X[:4]),), dynamic_shapes=shapes)
    torch.export.save(program, str(tmp_path / "m.pt2"))
    model = load_export(str(tmp_path / "m.pt2")).with_classes(("a", "b", "c"))
    # A static program (traced at 4 items) is fed batches of 4, the last one padded.
    assert model.static_batch == (None if dynamic else 4)
    assert model.count_outputs(X) == 3
    probs = model.predict_proba(X, batch_size=1024)
    np.testing.assert_allclose(probs, softmax(logits_of(net)), rtol=1e-5, atol=1e-6)


def test_probabilities_are_taken_as_they_are_and_checked(tmp_path: Path) -> None:
    net = nn.Sequential(tiny(), nn.Softmax(dim=1)).eval()
    path = str(save_torchscript(net, tmp_path / "p.pt"))
    probs = load_torchscript(path, "probabilities").with_classes(("a", "b", "c"))
    np.testing.assert_allclose(probs.predict_proba(X), logits_of(net), rtol=1e-5, atol=1e-6)
    # Softmax again would flatten them: probabilities are not logits.
    flattened = load_torchscript(path, "logits").with_classes(("a", "b", "c")).predict_proba(X)
    assert flattened.max() < logits_of(net).max()
    logits = str(save_torchscript(tiny(), tmp_path / "l.pt"))
    with pytest.raises(ValueError, match=r"spec\.model\.outputs is probabilities"):
        load_torchscript(logits, "probabilities").with_classes(("a", "b", "c")).predict_proba(X)


def test_class_count_mismatch_names_spec_model(tmp_path: Path) -> None:
    model = load_torchscript(str(save_torchscript(tiny(3), tmp_path / "m.pt")))
    with pytest.raises(ValueError, match=r"spec\.model: .* returns 3 outputs per item but "
                                         r"there are 10 classes"):
        model.with_classes(tuple("0123456789")).predict_proba(X)


def test_broken_or_missing_files_and_failing_models_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"spec\.model\.path: no model file"):
        load_torchscript(str(tmp_path / "absent.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a TorchScript file"):
        load_torchscript(str(tmp_path / "junk.pt"))
    wrong_input = UserModel(lambda x: torch.from_numpy(x) @ torch.ones(5, 2), "logits", "m")
    with pytest.raises(ValueError, match=r"spec.model: m failed on a float32 batch of shape "
                                         r"\(10, 4, 4\)"):
        wrong_input.with_classes(("a", "b")).predict_proba(X)
    one_dim = UserModel(lambda x: np.zeros(len(x)), "logits", "m").with_classes(("a",))
    with pytest.raises(ValueError, match=r"returned shape \(10,\)"):
        one_dim.predict_proba(X)


def test_entrypoint_takes_numpy_and_returns_numpy_or_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "teamcode").mkdir()
    (tmp_path / "teamcode" / "__init__.py").write_text("")
    (tmp_path / "teamcode" / "scoring.py").write_text(
        "import numpy as np\nimport torch\n"
        "def predict(x):\n    assert x.dtype == np.float32\n"
        "    return x.reshape(len(x), -1)[:, :2]\n"
        "def predict_torch(x):\n    return torch.from_numpy(x.reshape(len(x), -1)[:, :2])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    expected = softmax(X.reshape(10, -1)[:, :2].astype(np.float64))
    for name in ("predict", "predict_torch"):
        model = load_entrypoint(f"teamcode.scoring:{name}").with_classes(("a", "b"))
        np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"teamcode\.scoring has no function nope"):
        load_entrypoint("teamcode.scoring:nope")
    with pytest.raises(ValueError, match="cannot import nosuch"):
        load_entrypoint("nosuch.module:predict")


# ---- the score step and the merge with a user's model -------------------------------------

def write_labels(path: Path, ids: list[str], labels: list[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "label"])
        writer.writerows([i, str(label)] for i, label in zip(ids, labels, strict=True))


@pytest.fixture(scope="module")
def user_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """digits as a pool of one's own (.npz without class names), a TorchScript model, seed and
    validation CSVs: what a user brings."""
    root = tmp_path_factory.mktemp("user-model")
    pool = load_pool("digits")
    order = np.random.default_rng(1).permutation(len(pool))
    seed, val = order[:300], order[300:700]
    # examples/user-code/label_model.py: a team's model, normalization inside, no Cogwork code.
    net = label_model.train(pool.x[seed], pool.truth[seed])  # type: ignore[index]
    label_model.save(net, root, torch.from_numpy(pool.x[:2]))
    np.savez(root / "pool.npz", x=pool.x, id=pool.ids)
    write_labels(root / "seed.csv", pool.ids[seed].tolist(), pool.truth[seed].tolist())
    write_labels(root / "val.csv", pool.ids[val].tolist(), pool.truth[val].tolist())
    return {"root": root, "pool": pool, "doc": {
        "pool": {"path": str(root / "pool.npz"), "idField": "id"},
        "model": {"path": str(root / "label_model.ts"), "format": "torchscript",
                  "outputs": "logits"},
        "modelVersion": "team-v3", "output": str(root / "out"),
        "seed": {"path": str(root / "seed.csv")},
        "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                       "validation": {"path": str(root / "val.csv")}},
        "review": {"strategy": "margin", "batchSize": 50},
        "labelErrors": {"enabled": False}}}


def score(doc: dict[str, Any], shards: int, tmp: Path) -> list[int]:
    """`prelabel score` for every shard, in-process, as the pods run it; their exit codes."""
    codes = []
    for i in range(shards):
        os.environ["COGWORK_LABELJOB"] = json.dumps(doc)
        try:
            codes.append(prelabel.main(["score", "--shard-index", str(i), "--shard-count",
                                        str(shards), "--summary-to", str(tmp / f"s{i}.json")]))
        finally:
            del os.environ["COGWORK_LABELJOB"]
    return codes


def test_user_torchscript_model_is_certified_and_auto_accepts(user_job: dict[str, Any]) -> None:
    doc, pool = user_job["doc"], user_job["pool"]
    assert score(doc, 2, user_job["root"]) == [0, 0]
    summary = merge.run(parse(doc), 2)
    assert summary["total"] == summary["predicted"] == 1797
    assert summary["certified"] is True and summary["lowerBound"] >= 0.95
    assert summary["autoAccepted"] > 500 and summary["modelVersion"] == "team-v3"
    # No class names anywhere: "0".."9", the model's 10 outputs.
    with open(Path(doc["output"]) / "labels.csv", newline="") as f:
        auto = [r for r in csv.DictReader(f) if r["source"] == "auto"]
    truth = dict(zip(pool.ids.tolist(), pool.truth.tolist(), strict=True))
    assert np.mean([int(r["label"]) == truth[r["item_id"]] for r in auto]) >= 0.95


def test_score_step_with_the_wrong_class_count_exits_2_naming_spec_model(
        user_job: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads(json.dumps(user_job["doc"]))
    doc["model"]["classes"] = ["cat", "dog"]
    doc["output"] = str(tmp_path / "out")
    assert score(doc, 1, tmp_path) == [2]
    assert "spec.model: TorchScript model" in caplog.text
    assert "returns 10 outputs per item but there are 2 classes" in caplog.text
    assert not (tmp_path / "out" / "shards").exists()


# ---- the scorer in a user's image -------------------------------------------------------------

ALLOWED = {"numpy", "torch"} | set(sys.stdlib_module_names)


def test_scorer_copies_only_numpy_torch_and_stdlib_code(tmp_path: Path) -> None:
    bootstrap = install_scorer.install(tmp_path)
    assert bootstrap == tmp_path / "run.py"
    copied = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py"))
    assert "cogwork_trainer/labeling/prelabel.py" in copied
    assert "cogwork_trainer/labeling/user_model.py" in copied
    assert "cogwork_trainer/labeling/merge.py" not in copied  # only what scoring imports
    assert "cogwork_sdk/contract.py" in copied  # the shared pod contract the config reads
    for path in tmp_path.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top == "sklearn":  # pool.py: only a bundled dataset, never in a user image
                    continue
                if top in ("cogwork_trainer", "cogwork_sdk"):  # copied along, or it fails
                    base = tmp_path.joinpath(*name.split("."))
                    assert (base.with_suffix(".py").is_file()
                            or (base / "__init__.py").is_file()), f"{path}: {name} not copied"
                    continue
                assert top in ALLOWED, f"{path}: imports {name}"


def test_entrypoint_scores_in_a_bare_image_through_the_copied_scorer(tmp_path: Path) -> None:
    """The harness's bare image: torch, numpy and the team's code, nothing of Cogwork."""
    from harness.images import build_bare

    python = build_bare() / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import cogwork_trainer"], capture_output=True)
    assert probe.returncode != 0  # truly bare
    install_scorer.main([str(tmp_path / "scorer")])
    work = tmp_path / "work"
    work.mkdir()
    (work / "label_model.py").write_text(
        "def predict(x):\n    return x.reshape(len(x), -1)[:, :3]\n")
    np.savez(tmp_path / "pool.npz", x=X, classes=np.asarray(["a", "b", "c"]))
    doc = {"pool": {"path": str(tmp_path / "pool.npz")}, "output": str(tmp_path / "out"),
           "model": {"entrypoint": "label_model:predict", "outputs": "logits"},
           "modelVersion": "label_model:predict"}
    result = subprocess.run(
        [str(python), str(tmp_path / "scorer" / "run.py"), "-m",
         "cogwork_trainer.labeling.prelabel", "score", "--shard-index", "1", "--shard-count", "2",
         "--summary-to", str(tmp_path / "summary.json")],
        cwd=work, env={"COGWORK_LABELJOB": json.dumps(doc), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == 5
    with np.load(prelabel.shard_path(tmp_path / "out", 0, 1, 2)) as shard:
        np.testing.assert_allclose(shard["probs"], softmax(X.reshape(10, -1)[5:, :3]),
                                   rtol=1e-5)
