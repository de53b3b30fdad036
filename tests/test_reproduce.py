"""reproduce: every table variant in the paper's layout next to the paper's numbers, files written, values equal to
a direct computation, resume after an interruption (counted batches), and a 2-process torchrun run (gloo, CPU)
whose merged table equals a single-process run's.

Small settings: the committed world models (64 x 64 input) on ``world:N`` generated images, a few methods, few
Opti-CAM iterations and insertion/deletion steps.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opticam_lib import classification_metrics, gradcam, load_classifier, optimize
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.metrics.classification import class_probability
from opticam_lib.paper.reproduce import (
    PAPER_ROW,
    TWO_DECIMALS,
    Config,
    _evaluate_batch,
    _load_records,
    batches,
    load_image_spec,
    paper_reference,
    run,
)
from opticam_lib.paper.tables import paper_table

N = 4  # images per run
FAST = {"batch_size": 2, "iterations": 3}


@pytest.fixture(scope="module")
def world_cnn():
    return load_classifier("world_cnn")


def cfg(tmp_path: Path, name: str = "out", **kw) -> Config:
    base = {"model": "world_cnn", "images": f"world:{N}", "out": str(tmp_path / name), **FAST}
    return Config(**{**base, **kw})


class Counter:
    """Wraps ``_evaluate_batch``: counts the (method, variant, batch) it computes; can fail after ``fail_after``
    batches (an interruption)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, str, tuple[int, ...]]] = []
        self.fail_after = fail_after

    def __call__(self, clf, data, idx, method, variant, config):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append((method, variant, tuple(idx)))
        return _evaluate_batch(clf, data, idx, method, variant, config)


def without_time(table: dict) -> dict:
    return {row: {k: v for k, v in cols.items() if k != "T"} for row, cols in table.items()}


# --------------------------------------------------------------------------------------------------------------
# Images and batches


def test_image_specs(world_cnn, tmp_path, monkeypatch):
    w = load_image_spec("world:5", 64, world_cnn)
    assert w.images.shape == (5, 3, 64, 64) and 0 <= float(w.images.min()) and float(w.images.max()) <= 1
    assert torch.equal(w.images, load_image_spec("world:5", 64, world_cnn).images)  # the same every run
    assert int(w.labels.max()) < world_cnn.num_classes and all(b.shape == (1, 4) for b in w.boxes)
    assert len(load_image_spec("samples:3", 64)) == 3
    for bad in ("world:0", "world:-2", "world:x", "samples:1.5"):
        with pytest.raises(InputError, match="image count"):
            load_image_spec(bad, 64)
    with pytest.raises(InputError, match="classes"):  # ImageNet labels for a 4-class model
        load_image_spec("samples:2", 64, world_cnn)
    monkeypatch.setenv("OPTICAM_CACHE", str(tmp_path))
    with pytest.raises(MissingDataError, match="python -m data_download imagenet-val"):
        load_image_spec("imagenet-val:10", 224)


@pytest.mark.parametrize("n,b,world", [(10, 3, 2), (7, 2, 3), (4, 8, 2), (1, 1, 4)])
def test_batches_partition_the_images_as_in_one_process(n, b, world):
    single = batches(n, b)
    sharded = [batch for r in range(world) for batch in batches(n, b, r, world)]
    assert sorted(sharded) == single  # the same batches, each computed by exactly one rank
    assert [i for batch in single for i in batch] == list(range(n))


# --------------------------------------------------------------------------------------------------------------
# Every table


TABLE_RUNS = {
    "1": {"methods": ["fakecam", "gradcam", "opticam"]},
    "2": {"model": "world_vit", "methods": ["gradcam", "rawatt", "rollout"]},
    "3": {"methods": ["gradcam", "opticam"], "steps": 4},
    "4": {"methods": ["gradcam", "opticam"]},
    "5": {"methods": ["box", "complement", "gradcam"]},
    "A7": {"methods": ["fakecam", "gradcam"]},
    "A8": {"model": "world_vit", "methods": ["gradcam", "tibav"]},
    "A9": {"methods": ["gradcam", "opticam"]},
    "A14": {"methods": ["fakecam", "gradcam"]},
}


@pytest.mark.parametrize("table", list(TABLE_RUNS))
def test_every_table_in_the_papers_layout(table, tmp_path):
    config = cfg(tmp_path, table=table, **TABLE_RUNS[table])
    result = run(config, progress=False)
    out = Path(config.out)
    paper_model, paper = paper_reference(config)
    assert paper == paper_table(table, paper_model)  # the part of the paper's table for that model
    # our columns are the paper's (for the rows we have; the box rows of table 5 have S columns only)
    for name, row in result.table.items():
        ref_row = paper[PAPER_ROW.get(name, name)]
        paper_cols = {c for c, v in ref_row.items() if isinstance(v, (int, float))}
        if not any(k.endswith("_misclassified") for k in row):  # only when some image is misclassified
            paper_cols = {c for c in paper_cols if not c.endswith("_misclassified")}
        ours = set(row) - {"images"}
        assert paper_cols and paper_cols <= ours
        assert row["images"] == N
        # each of our values is printed with the paper's beside it
        line = next(ln for ln in result.text.splitlines() if ln.startswith(name + " "))
        for c in paper_cols & ours:
            ref = ref_row[c]
            assert (f"[{ref:.2f}]" if c in TWO_DECIMALS else f"[{ref:.1f}]") in line
    assert f"the paper's value for {paper_model}" in result.text
    # files
    saved = json.loads((out / "table.json").read_text())
    assert saved["table"] == json.loads(json.dumps(result.table)) and saved["paper_model"] == paper_model
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(result.table)
    first = next(iter(result.table))
    col = next(c for c in result.table[first] if c != "images")
    assert float(rows[0][col]) == pytest.approx(result.table[first][col])
    # table.txt: the printed table, its settings line, then who made it (as table.json's provenance says)
    txt = (out / "table.txt").read_text()
    assert txt.startswith(result.text.strip() + "\n") and result.text.splitlines()[1].startswith("settings: ")
    made = saved["provenance"]
    assert set(made) == {"opticam_lib", "torch", "python", "date", "command", "device", "model_sha256"}
    assert made["device"] == "cpu" and len(made["model_sha256"]) == 64
    assert all(f"\n{k}: {v}" in txt for k, v in made.items())
    assert result.computed == len(config.methods) * (4 if table == "A9" else 1) * 2  # 2 batches of 2


def test_table1_values_equal_a_direct_computation(world_cnn, tmp_path):
    result = run(cfg(tmp_path, methods=["gradcam"]), progress=False)
    data = load_image_spec(f"world:{N}", 64, world_cnn)
    maps = gradcam(world_cnn, data.images, data.labels)
    p = class_probability(world_cnn, data.images, data.labels)
    o = class_probability(world_cnn, data.images * maps, data.labels)
    expected = classification_metrics(p, o)
    for k in ("AD", "AG", "AI"):
        assert result.table["Grad-CAM"][k] == pytest.approx(expected[k], abs=1e-4)


def test_layer_and_lr_reach_the_methods(world_cnn, tmp_path):
    """--layer and --lr are not silently ignored: the table equals a direct computation with them."""
    data = load_image_spec(f"world:{N}", 64, world_cnn)
    p = class_probability(world_cnn, data.images, data.labels)
    result = run(cfg(tmp_path, "layer", methods=["gradcam", "cam"], layer="features.2"), progress=False)
    maps = gradcam(world_cnn, data.images, data.labels, layer="features.2")
    expected = classification_metrics(p, class_probability(world_cnn, data.images * maps, data.labels))
    assert result.table["Grad-CAM"]["AD"] == pytest.approx(expected["AD"], abs=1e-4)
    default = run(cfg(tmp_path, "default", methods=["gradcam"]), progress=False)
    assert default.table["Grad-CAM"]["AD"] != pytest.approx(result.table["Grad-CAM"]["AD"], abs=1e-4)

    result = run(cfg(tmp_path, "lr", methods=["opticam"], lr=0.5), progress=False)
    maps = optimize(
        world_cnn, data.images, data.labels, iterations=FAST["iterations"], lr=0.5, progress=False
    ).maps
    expected = classification_metrics(p, class_probability(world_cnn, data.images * maps, data.labels))
    assert result.table["Opti-CAM"]["AD"] == pytest.approx(expected["AD"], abs=1e-4)


def test_default_layer_and_lr_keep_the_cache_key():
    """Caches written before --layer/--lr existed stay valid; any other value is another run."""
    assert Config().key() == Config(lr=0.1, layer=None).key()
    assert Config(lr=0.2).key() != Config().key() != Config(layer="features.2").key()


def test_table4_values_equal_a_direct_computation(world_cnn, tmp_path):
    from opticam_lib.metrics.more_metrics import adcc, aopc, max_sensitivity

    result = run(cfg(tmp_path, table="4", methods=["gradcam"]), progress=False)
    data = load_image_spec(f"world:{N}", 64, world_cnn)
    maps = gradcam(world_cnn, data.images, data.labels)
    row = result.table["Grad-CAM"]
    assert row["AOPC"] == pytest.approx(
        100 * float(aopc(world_cnn, data.images, maps, data.labels).mean()), abs=1e-4
    )
    r = adcc(world_cnn, data.images, "gradcam", data.labels, maps=maps)
    assert row["ADCC"] == pytest.approx(100 * float(r.adcc.mean()), abs=1e-4)
    ms = [  # MS's noise is seeded by each batch's first image index: the same in any shard
        max_sensitivity(world_cnn, data.images[b : b + 2], "gradcam", data.labels[b : b + 2], seed=b)
        for b in (0, 2)
    ]
    assert row["MS"] == pytest.approx(float(torch.cat(ms).mean()), abs=1e-6)
    # ResNet50's Grad-CAM
    assert "AOPC" in result.text and "[11.7]" in result.text and "[1.05]" in result.text


def test_table4_without_quantus_says_how_to_install_it(tmp_path, monkeypatch):
    from opticam_lib.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "quantus", None)
    counter = Counter()
    with pytest.raises(MissingDependencyError, match="pip install quantus"):
        run(cfg(tmp_path, table="4", methods=["gradcam"]), progress=False, evaluate_batch=counter)
    assert counter.calls == [] and not (tmp_path / "out").exists()  # refused before any work


def test_table5_box_rows(world_cnn, tmp_path):
    result = run(cfg(tmp_path, table="5", methods=["box", "gradcam"]), progress=False)
    data = load_image_spec(f"world:{N}", 64, world_cnn)
    box = data.masks()
    p = class_probability(world_cnn, data.images, data.labels)
    o = class_probability(world_cnn, data.images * box, data.labels)
    assert result.table["S := B"]["AD_S"] == pytest.approx(classification_metrics(p, o)["AD"], abs=1e-4)
    assert {"AD_B_and_S", "AG_S_minus_B"} <= set(result.table["Grad-CAM"])


def test_localisation_tables_equal_a_direct_computation(world_cnn, tmp_path):
    """Table A7 from per-image records cached in batches of 2 equals ``localization_scores`` on all images at
    once (BoxAcc is aggregated over the images, not averaged per batch), and the TIBAV row of A8 is TIBAV's."""
    from opticam_lib.methods.relevance import tibav
    from opticam_lib.metrics.localization import localization_scores

    result = run(cfg(tmp_path, table="A7", methods=["gradcam"]), progress=False)
    data = load_image_spec(f"world:{N}", 64, world_cnn)
    expected = localization_scores(
        world_cnn, data.images, gradcam(world_cnn, data.images, data.labels), data.boxes, data.labels
    )
    row = result.table["Grad-CAM"]
    assert set(expected) == set(row) - {"images"}
    for k, v in expected.items():
        assert row[k] == pytest.approx(v, abs=1e-6), k
    vit = load_classifier("world_vit")
    result = run(cfg(tmp_path, "a8", table="A8", model="world_vit", methods=["tibav"]), progress=False)
    expected = localization_scores(
        vit, data.images, tibav(vit, data.images, data.labels), data.boxes, data.labels
    )
    for k, v in expected.items():
        assert result.table["TIBAV"][k] == pytest.approx(v, abs=1e-6), k
    assert "TIBAV " in result.text and "[70.1]" in result.text  # ViT-B's TIBAV OM in the paper's Table A8


def test_localisation_needs_a_box_for_every_image(world_cnn, tmp_path, monkeypatch):
    import opticam_lib.paper.reproduce as rp

    real = rp.load_image_spec

    def without_box(spec, size, classifier=None):
        data = real(spec, size, classifier)
        data.boxes[1] = torch.zeros(0, 4)
        return data

    monkeypatch.setattr(rp, "load_image_spec", without_box)
    counter = Counter()
    for table in ("A7", "5"):
        with pytest.raises(InputError, match="needs a ground-truth box for every image; 1 of 4"):
            run(cfg(tmp_path, table=table, methods=["gradcam"]), progress=False, evaluate_batch=counter)
    assert counter.calls == []


def test_bad_configs(tmp_path):
    with pytest.raises(InputError, match="transformer"):
        run(cfg(tmp_path, table="2"), progress=False)
    with pytest.raises(InputError, match="unknown table"):
        run(cfg(tmp_path, table="A12"), progress=False)  # stored from the paper, not computed here
    with pytest.raises(InputError, match="use table A8"):
        run(cfg(tmp_path, table="A7", model="world_vit"), progress=False)
    with pytest.raises(InputError, match="table A7 for CNNs"):
        run(cfg(tmp_path, table="A8"), progress=False)
    for table, other in (("A10", "1"), ("A11", "5")):  # the medical tables need a fine-tuned checkpoint
        with pytest.raises(InputError, match=f"appendix E's medical table: world_cnn .*or table {other} for"):
            run(cfg(tmp_path, table=table), progress=False)
    with pytest.raises(InputError, match="table 5 only"):
        run(cfg(tmp_path, methods=["box"]), progress=False)
    with pytest.raises(InputError, match="unknown method"):
        run(cfg(tmp_path, methods=["gradkam"]), progress=False)
    with pytest.raises(InputError, match="unknown layer 'layer9'"):
        run(cfg(tmp_path, layer="layer9"), progress=False)
    with pytest.raises(InputError, match="lr must be a positive"):
        run(cfg(tmp_path, lr=0), progress=False)


# --------------------------------------------------------------------------------------------------------------
# Resume


def test_resume_after_interruption_reuses_cached_records(tmp_path):
    methods = ["fakecam", "gradcam", "opticam"]
    total = len(methods) * 2  # 2 batches of 2 images per method
    interrupted = Counter(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run(cfg(tmp_path, methods=methods), progress=False, evaluate_batch=interrupted)
    assert len(interrupted.calls) == 4
    resumed = Counter()
    result = run(cfg(tmp_path, methods=methods), progress=False, evaluate_batch=resumed)
    assert len(resumed.calls) == total - 4 and result.computed == total - 4
    assert not set(resumed.calls) & set(interrupted.calls)  # nothing computed twice
    again = Counter()
    cached = run(cfg(tmp_path, methods=methods), progress=False, evaluate_batch=again)
    assert again.calls == [] and cached.computed == 0 and cached.table == result.table
    fresh = run(cfg(tmp_path, "fresh", methods=methods), progress=False)
    assert without_time(result.table) == without_time(fresh.table)


def test_a_line_cut_short_is_recomputed(tmp_path):
    config = cfg(tmp_path, methods=["gradcam"])
    full = run(config, progress=False)
    path = Path(config.out) / "records-0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed while writing the last record
    assert len(_load_records(Path(config.out))) == N - 1
    counter = Counter()
    again = run(config, progress=False, evaluate_batch=counter)
    assert counter.calls == [("gradcam", "main", (2, 3))]
    assert without_time(again.table) == without_time(full.table)


def test_a_first_record_cut_short_is_not_glued_to_the_resumed_batch(tmp_path):
    """Killed while writing the first record of the last batch: the resume must not append its records after the
    fragment (the first one would be unreadable, and the table silently one image short)."""
    config = cfg(tmp_path, methods=["gradcam"])
    full = run(config, progress=False)
    path = Path(config.out) / "records-0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # images 0, 1 and a fragment of image 2
    again = run(config, progress=False)
    assert again.table["Grad-CAM"]["images"] == N
    assert without_time(again.table) == without_time(full.table)
    assert path.read_text().endswith("\n") and len(_load_records(Path(config.out))) == N
    path.write_bytes(path.read_bytes() + b"\0" * 64)  # a crash can leave NUL bytes instead of a line
    assert without_time(run(config, progress=False).table) == without_time(full.table)


def test_a_fragment_cut_mid_character_does_not_stop_the_resume(tmp_path):
    config = cfg(tmp_path, methods=["gradcam"])
    full = run(config, progress=False)
    path = Path(config.out) / "records-0.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + b'{"method": "gradcam", "vari\xff\xfe\x00')  # not UTF-8
    again = run(config, progress=False)
    assert without_time(again.table) == without_time(full.table)


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": '{"table": "1", "mod'},  # unreadable
        {"config.json": '{"name": "my project", "version": 3}'},  # another program's
        {"table.csv": "name,score\nalice,10\n"},
        {"notes.txt": "mine"},
    ],
    ids=["unreadable-config", "other-config", "table-csv", "other-file"],
)
def test_a_folder_reproduce_did_not_make_is_refused_and_left_alone(tmp_path, files):
    """--out pointing at a user's folder: its config.json and table.* would be overwritten. Refused, and every
    file is left as it was; an empty folder, or one holding only an interrupted atomic write, is fine."""
    config = cfg(tmp_path, methods=["fakecam"])
    out = Path(config.out)
    out.mkdir(parents=True)
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(InputError, match=r"overwrite your files\. Use another --out"):
        run(config, progress=False)
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    for name in files:
        (out / name).unlink()
    (out / ".config.json.123.tmp").write_text("half")  # a killed atomic_write
    assert run(config, progress=False).table


def test_a_changed_image_or_label_is_refused_on_resume(tmp_path):
    """A record keeps a digest of its image's file (or pixels), label and boxes: fixing a label or replacing an
    image in the folder, then running the same command, must not reuse the old numbers."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        pixels = (torch.rand(40, 48, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{name}.png")
    (folder / "labels.txt").write_text("a 100\nb 281\n")
    config = Config(
        model="efficientnet_lite0",
        images=str(folder),
        methods=["fakecam"],
        batch_size=1,
        out=str(tmp_path / "out"),
    )
    first = run(config, progress=False)
    assert run(config, progress=False).computed == 0  # unchanged: all from the cache
    (folder / "labels.txt").write_text("a 967\nb 281\n")  # the label of a fixed
    with pytest.raises(InputError, match=r"image 0 \('a'\) changed since its cached records"):
        run(config, progress=False)
    (folder / "labels.txt").write_text("a 100\nb 281\n")
    assert without_time(run(config, progress=False).table) == without_time(first.table)
    flipped = Image.open(folder / "b.png").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(folder / "b.png")  # another picture under the same name
    os.utime(folder / "b.png", ns=(1, 1))
    with pytest.raises(InputError, match=r"image 1 \('b'\) changed"):
        run(config, progress=False)


def test_other_weights_or_another_device_are_refused_on_resume(tmp_path, monkeypatch):
    """A retrained checkpoint (or re-downloaded weights) at the same path, or a resume on another device (T would
    average both devices' times), is refused; the records name the weights' SHA-256 and the device."""
    import opticam_lib.paper.reproduce as reproduce

    config = cfg(tmp_path, methods=["fakecam"])
    run(config, progress=False)
    path = Path(config.out) / "records-0.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["device"] for r in records} == {"cpu"} and len({r["model_sha256"] for r in records}) == 1
    real = reproduce.load_model

    def retrained(*args, **kwargs):
        clf = real(*args, **kwargs)
        with torch.no_grad():
            next(clf.model.parameters()).add_(0.01)
        return clf

    monkeypatch.setattr(reproduce, "load_model", retrained)
    with pytest.raises(InputError, match="weights changed since the cached records"):
        run(config, progress=False)
    monkeypatch.setattr(reproduce, "load_model", real)
    records[0]["device"] = "cuda (NVIDIA H200)"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=r"computed on cuda \(NVIDIA H200\), this run is on cpu"):
        run(config, progress=False)


def test_records_of_another_version_of_the_code_are_refused_on_resume(tmp_path, monkeypatch):
    """A resume after the library changed (an upgrade, an edit that moves the numbers) would mix both versions'
    numbers in one table: records name the code's SHA-256 and a resume under other code is refused."""
    import opticam_lib.paper.reproduce as reproduce
    from opticam_lib.digests import code_digest

    config = cfg(tmp_path, methods=["fakecam"])
    run(config, progress=False)
    records = [json.loads(line) for line in (Path(config.out) / "records-0.jsonl").read_text().splitlines()]
    assert {r["code_sha256"] for r in records} == {code_digest()[:16]}
    run(config, progress=False)  # the same code resumes (nothing to compute)
    monkeypatch.setattr(reproduce, "code_digest", lambda: "f" * 64)
    with pytest.raises(InputError, match="library's code changed since the cached records"):
        run(config, progress=False)


def test_code_digest_follows_the_librarys_source(tmp_path, monkeypatch):
    import opticam_lib.digests as digests

    fake = tmp_path / "opticam_lib"
    (fake / "methods").mkdir(parents=True)
    (fake / "digests.py").write_text("x = 1\n")
    (fake / "methods" / "maps.py").write_text("eps = 1e-12\n")
    monkeypatch.setattr(digests, "__file__", str(fake / "digests.py"))
    digests.code_digest.cache_clear()
    try:
        before = digests.code_digest()
        (fake / "methods" / "maps.py").write_text("eps = None\n")
        digests.code_digest.cache_clear()
        assert digests.code_digest() != before
        (fake / "methods" / "maps.py").write_text("eps = 1e-12\n")
        digests.code_digest.cache_clear()
        assert digests.code_digest() == before
        # the same code checked out with Windows line endings; an editor's lock link, a notebook helper's edit
        (fake / "methods" / "maps.py").write_bytes(b"eps = 1e-12\r\n")
        (fake / "methods" / ".#maps.py").symlink_to(fake / "gone")
        (fake / "course").mkdir()
        (fake / "course" / "quiz.py").write_text("QUESTIONS = []\n")
        digests.code_digest.cache_clear()
        assert digests.code_digest() == before
    finally:
        digests.code_digest.cache_clear()


def _rank_with_its_own_code(rank: int, init: str, answers: str) -> None:
    import torch.distributed as dist

    from opticam_lib.paper.reproduce import _same_on_every_rank

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        _same_on_every_rank(f"{rank:x}" * 64, "ab" * 32, torch.device("cpu"))
        Path(answers, str(rank)).write_text("no error")
    except InputError as e:
        Path(answers, str(rank)).write_text(str(e))
    finally:
        dist.destroy_process_group()


def test_torchrun_ranks_with_different_code_are_refused_before_any_batch(tmp_path):
    """Two machines with different installs: every rank refuses before computing anything (the merge at the end
    found it, after every batch, with a message about a code change that never happened)."""
    import torch.multiprocessing as mp

    mp.spawn(
        _rank_with_its_own_code,
        args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for rank in (0, 1):
        message = (tmp_path / str(rank)).read_text()
        assert message.startswith("the torchrun ranks run with different library code"), message
        assert "rank 0: 0000000000000000..." in message and "rank 1: 1111111111111111..." in message


def test_the_first_timed_batch_is_warmed_up(tmp_path, monkeypatch):
    """T of the first method must not include a first pass's one-off costs (evaluate warms up too); a run that
    computes nothing does not warm up."""
    import opticam_lib.paper.reproduce as reproduce

    order = []
    real = reproduce.warm_up
    monkeypatch.setattr(
        reproduce, "warm_up", lambda clf, x: order.append(("warm", tuple(x.shape))) or real(clf, x)
    )
    counter = Counter()

    def counted(*args):
        order.append(("batch", args[3]))
        return counter(*args)

    config = cfg(tmp_path, methods=["gradcam", "fakecam"])
    run(config, progress=False, evaluate_batch=counted)
    assert order[0] == ("warm", (1, 3, 64, 64)) and [o[0] for o in order[1:]] == ["batch"] * 4
    order.clear()
    run(config, progress=False, evaluate_batch=counted)
    assert order == []


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path):
    """Two runs on one folder at once would compute the same batches twice or, with other settings that both
    passed the config check, mix their records: the second is refused at once (the lock goes with the process)."""
    from opticam_lib.paths import exclusive_lock

    config = cfg(tmp_path, methods=["fakecam"])
    out = Path(config.out)
    out.mkdir(parents=True)
    with exclusive_lock(out, "held by the test"):  # as a first run would hold it
        with pytest.raises(InputError, match=r"another reproduce run is using .*out: wait for it to finish"):
            run(config, progress=False)
    assert list(out.iterdir()) == []  # nothing written by the refused run, and no lock file
    assert run(config, progress=False).table  # free again


def test_records_of_other_images_are_refused(tmp_path):
    config = cfg(tmp_path, methods=["fakecam"])
    run(config, progress=False)
    path = Path(config.out) / "records-0.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["image"] for r in records] == load_image_spec(
        f"world:{N}", 64
    ).names  # each record names its image
    records[1]["image"] = "another_image"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match="other images: image 1 was 'another_image'"):
        run(config, progress=False)


def test_a_missing_record_fails_the_table_instead_of_averaging_fewer_images(tmp_path):
    def loses_image_3(clf, data, idx, method, variant, config):
        return [r for r in _evaluate_batch(clf, data, idx, method, variant, config) if r["index"] != 3]

    with pytest.raises(InputError, match="1 record\\(s\\) are missing"):
        run(cfg(tmp_path, methods=["fakecam"]), progress=False, evaluate_batch=loses_image_3)


@pytest.mark.parametrize("damage", ["", "null", "[]", "{not json"])
def test_records_without_a_readable_config_are_refused(tmp_path, damage):
    config = cfg(tmp_path, methods=["fakecam"])
    run(config, progress=False)
    (Path(config.out) / "config.json").write_text(damage)
    with pytest.raises(InputError, match=r"cannot be read|is not reproduce's"):
        run(cfg(tmp_path, methods=["fakecam"], iterations=50), progress=False)
    (Path(config.out) / "config.json").unlink()
    with pytest.raises(InputError, match=r"no config\.json"):
        run(config, progress=False)


def test_another_config_in_the_same_folder_is_refused(tmp_path):
    run(cfg(tmp_path, methods=["fakecam"]), progress=False)
    with pytest.raises(InputError, match="records of a run with other settings"):
        run(cfg(tmp_path, methods=["fakecam"], iterations=7), progress=False)


# --------------------------------------------------------------------------------------------------------------
# torchrun: 2 processes, gloo on the CPU


def test_torchrun_two_processes_equal_one(tmp_path):
    args = ["--table", "1", "--model", "world_cnn", "--images", "world:6", "--batch-size", "2"]
    args += ["--methods", "fakecam,gradcam,opticam", "--iterations", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    cmd += ["-m", "opticam_lib", "reproduce", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    titles = [ln for ln in proc.stdout.splitlines() if ln.startswith("Table 1 (")]
    assert len(titles) == 1  # rank 0 prints the table, once
    two_dir = tmp_path / "two"
    assert {p.name for p in two_dir.glob("records-*.jsonl")} == {"records-0.jsonl", "records-1.jsonl"}
    # rank 0 computed batches 0 and 2 (images 0, 1, 4, 5), rank 1 batch 1 (images 2, 3)
    rank1 = {json.loads(ln)["index"] for ln in (two_dir / "records-1.jsonl").read_text().splitlines()}
    assert rank1 == {2, 3}
    one = run(
        Config(
            table="1",
            model="world_cnn",
            images="world:6",
            methods=["fakecam", "gradcam", "opticam"],
            batch_size=2,
            iterations=3,
            out=str(tmp_path / "one"),
        ),
        progress=False,
    )
    merged = json.loads((two_dir / "table.json").read_text())["table"]
    assert without_time(merged) == without_time(json.loads(json.dumps(one.table)))
    recs_two, recs_one = _load_records(two_dir), _load_records(tmp_path / "one")
    assert recs_two.keys() == recs_one.keys()
    for k in recs_one:  # per image, bit for bit
        assert (recs_two[k]["p"], recs_two[k]["o"]) == (recs_one[k]["p"], recs_one[k]["o"])
