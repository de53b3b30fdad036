"""Fetching an item by name, and saying what is in the cache: what ``python -m data_download`` runs.

Everything takes the manifest and the cache folder as arguments (defaults: the shipped manifest and
``opticam_lib.paths.cache_dir()``), so tests and mirrors can inject their own.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .datasets import (
    IMAGENET_VAL_SIZE,
    MARKER,
    check_folder,
    describe_marker,
    prepare_chest_xray,
    prepare_imagenet_val,
    prepare_imagenette,
    prepare_kvasir,
    read_marker,
)
from .errors import (
    ChecksumError,
    DamagedArchiveError,
    DataDownloadError,
    ManualStepRequired,
    UsageError,
    WrongArchiveError,
)
from .fetch import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Digests,
    State,
    command_for,
    default_cache,
    download,
    human_size,
    install_copy,
    verify_file,
)
from .manifest import FileSpec, Item, Manifest, load_manifest

Log = Callable[[str], None]

_PREPARERS = {"imagenette": prepare_imagenette, "chest-xray": prepare_chest_xray, "kvasir": prepare_kvasir}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def weights_target(item: Item, cache: Path) -> Path:
    """Where the weights of ``item`` go: ``cache/weights/<file name>``, the place
    ``opticam_lib.models.weights_path(model)`` reads (``item.target``, relative to the cache, when the manifest
    names one). The file name is the manifest's, so this needs no model code."""
    if item.target is not None:
        return Path(cache) / item.target
    return Path(cache) / "weights" / item.files[0].name


def dataset_folder(item: Item, cache: Path) -> Path:
    """Where data set ``item`` is prepared: ``cache/datasets/<folder>`` (``opticam_lib.paths.datasets_dir()``)."""
    return Path(cache) / "datasets" / str(item.folder)


def downloads_dir(cache: Path) -> Path:
    """Where data set archives are downloaded (and hand-copied archives are looked for): ``cache/downloads``."""
    return Path(cache) / "downloads"


def imagenet_instructions(item: Item, cache: Path | None = None) -> str:
    """What to do to get ILSVRC2012 validation: the message printed when ``--from`` is missing."""
    spec = (
        item.file("ILSVRC2012_img_val.tar")
        if any(f.name == "ILSVRC2012_img_val.tar" for f in item.files)
        else None
    )
    checks = f" ({human_size(spec.size)}, MD5 {spec.md5})" if spec is not None and spec.md5 else ""
    cmd = command_for(item.name, cache)
    return "\n".join(
        [
            f"{item.name} cannot be downloaded for you: the ImageNet licence forbids redistribution. "
            "Get your own copy, then point data_download at it:",
            "  1. Sign in at https://image-net.org/download-images (non-commercial research), accept the terms and",
            f"     download ILSVRC2012_img_val.tar{checks} and ILSVRC2012_bbox_val_v3.tgz (labels and boxes).",
            f"  2. {cmd} --from ~/Downloads/ILSVRC2012_img_val.tar --from ~/Downloads/ILSVRC2012_bbox_val_v3.tgz",
            "  Kaggle's 'ImageNet Object Localization Challenge' works too: --from its folder (it holds",
            "  ILSVRC/Data/CLS-LOC/val and LOC_val_solution.csv).",
            "  Hugging Face works too (gated data set ILSVRC/imagenet-1k: accept its terms on the website, put your own",
            "  token in $HF_TOKEN, never in a file of this project):",
            "     hf download ILSVRC/imagenet-1k data/val_images.tar.gz --repo-type dataset --local-dir ~/imagenet-hf",
            f"     {cmd} --from ~/imagenet-hf/data/val_images.tar.gz",
            "  (its file names carry the labels; add --from ILSVRC2012_bbox_val_v3.tgz for boxes).",
            "Only the chosen images are extracted: a 1,000-image subset (the paper's sample size) by default, --subset N or --subset all.",
        ]
    )


def fetch_item(
    name: str,
    *,
    manifest: Manifest | None = None,
    cache: Path | None = None,
    sources: Sequence[Path] = (),
    subset: int | None = 1000,
    exact_subset: bool = False,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    imagenet_total: int = IMAGENET_VAL_SIZE,
    forget_recorded: bool = False,
    log: Log = _stderr,
) -> Path:
    """Fetch item ``name`` into the cache (download, or take the user's files), verify it, prepare it.

    Args:
        manifest: default: the shipped ``manifest.json``.
        cache: default: ``opticam_lib.paths.cache_dir()``.
        sources: the user's own files or folders (``--from``): a weights file, an archive, an extracted folder,
            or for ``imagenet-val`` the images and the annotations.
        subset: ``imagenet-val`` only: how many images (None for all 50,000).
        exact_subset: ``imagenet-val`` only: True when ``subset`` was asked for explicitly (``--subset``): a folder
            prepared with another number of images is then not taken as prepared. False (the default) accepts a
            folder prepared with at least ``subset`` images: subsets are nested (``imagenet_subset_ids``), so it
            holds the ``subset`` asked for.
        force: fetch and prepare again even if the item is already in place. A folder at the data set's place
            that data_download did not prepare (no ``.complete.json``: your own) is then moved to
            ``<folder>.user-backup-<date>``, never deleted; without ``force`` it is refused.
        keep_archive: keep a data set's downloaded archive after preparing it.
        timeout: seconds to wait for a server (connection and each read).
        imagenet_total: number of validation images (50,000; smaller only in tests).
        forget_recorded: first drop the checksums recorded on first use for this item's files (those without a
            published checksum), so that a file that legitimately changed upstream is accepted and recorded anew.
            Implies ``force``: the local copy is the one the forgotten record vouched for, so the item is fetched
            again (a downloaded archive too) instead of the old copy being recorded anew.

    Returns:
        The weights file or the prepared data set folder.

    Raises:
        ManifestError: unknown name.
        OfflineError, HTTPDownloadError, ChecksumError, ManualStepRequired, DataDownloadError: see the message.
    """
    manifest = manifest or load_manifest()
    cache = Path(cache) if cache is not None else default_cache()
    item = manifest.get(name)
    sources = [Path(s).expanduser() for s in sources]
    for s in sources:
        if not s.exists():
            raise UsageError(f"--from {s}: no such file or folder")
    net = {"timeout": timeout, "retries": retries, "progress": progress}
    if forget_recorded:
        gone = State(cache).forget(item.name)
        log(
            f"{item.name}: forgot the recorded checksums of {', '.join(gone) if gone else 'no file (none recorded)'}"
            "; fetching it again"
        )
        force = True
    if item.kind == "weights":
        return _fetch_weights(item, cache, sources, force, net, log)
    return _fetch_dataset(
        item,
        cache,
        sources,
        subset,
        exact_subset,
        force,
        forget_recorded,
        keep_archive,
        net,
        imagenet_total,
        log,
    )


def _verify_in_place(
    path: Path, spec: FileSpec, item: Item, state: State, progress: bool, log: Log
) -> Digests | None:
    """Verify a file found at its final place; a bad one is moved aside (``.corrupt``) so nothing broken stays.

    Returns None when there is no file at ``path``. All of it runs under the lock of ``path`` (the one
    ``download`` and ``install_copy`` hold while they put a file there), so a file another process has just
    installed is never moved aside; and the file is moved aside only if it still has the size, modification time,
    change time and inode that were hashed.
    """
    with state.lock(path):
        try:
            before = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        try:
            return verify_file(
                path, spec, item=item.name, state=state, origin=f"found at {path}", progress=progress, log=log
            )
        except ChecksumError as e:
            if not _unchanged(path, before):
                raise DataDownloadError(
                    f"{path} changed while it was being checked (copied over by hand?); nothing was moved. Run the "
                    "same command again to check it."
                ) from None
            bad = _set_aside(path)
            raise type(e)(
                f"{e} It was moved aside to {bad}. Run the same command again to download a fresh copy "
                "(or copy a good file to the same place)."
            ) from None


def _unchanged(path: Path, before: os.stat_result) -> bool:
    """True if ``path`` is still the file ``before`` describes (same inode, size, modification and change time:
    a copy made with ``cp -p`` over it restores the first three, not the last)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    fields = ("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    return all(getattr(now, f) == getattr(before, f) for f in fields)


def _set_aside(path: Path) -> Path:
    """Rename a bad file ``path`` to ``path.corrupt`` (replacing an older one) so that it is not used again."""
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return bad


def _item_lock(item: Item, cache: Path) -> str:
    """The lock key of ``item`` in ``cache``: the cache as a resolved absolute path, however it was spelled."""
    return f"item:{item.name}:{Path(cache).resolve()}"


#: the archives a preparation reads, by resolved path: (their manifest entry, their digests when verified)
Checked = dict[Path, tuple[FileSpec, Digests]]


@contextlib.contextmanager
def _on_damaged_archive(
    item: Item, cache: Path, state: State, checked: Checked, sources: list[Path], ours: Path | None
) -> Iterator[None]:
    """Turn a ``DamagedArchiveError`` of the preparation into one that says what was done and what to do.

    The checksum recorded on first use for the damaged file (when it is exactly that file's) is forgotten, so
    that a good copy is accepted later instead of being refused as "not the recorded file". ``ours`` is the
    archive this command downloaded or found in the cache: it is moved aside (``.corrupt``); the user's own
    files (``sources``, given with ``--from``) are left alone.
    """
    try:
        yield
    except DamagedArchiveError as e:
        text = f"{e.path} is damaged or incomplete ({e.reason})" + _damaged_advice(
            item, cache, e.path, sources, ours
        )
        if _forget_damaged(item, state, checked.get(e.path.resolve())):
            text += (
                " The checksum recorded for it on first use was forgotten (it was this damaged file's), so a "
                "good copy will be accepted."
            )
        raise DamagedArchiveError(text, path=e.path, reason=e.reason) from None
    except WrongArchiveError as e:  # it reads to its end, but it is not the data set
        text = f"{e.reason}. Nothing was prepared" + _damaged_advice(
            item, cache, e.path, sources, ours, wrong=True
        )
        if _forget_damaged(item, state, checked.get(e.path.resolve())):
            text += (
                " The checksum recorded for it on first use was forgotten (it was this file's), so the right "
                "file will be accepted."
            )
        raise WrongArchiveError(text, path=e.path) from None


def _damaged_advice(
    item: Item, cache: Path, damaged: Path, sources: list[Path], ours: Path | None, *, wrong: bool = False
) -> str:
    """What was done with a damaged (or ``wrong``) archive and the exact command to run next (rest of a sentence)."""
    command = command_for(item.name, cache)
    if ours is not None and ours.is_file() and damaged.resolve() == ours.resolve():
        bad = _set_aside(ours)
        return f"; it was moved aside to {bad}. Run {command} to download it again."
    again = " ".join([command, *(f"--from {shlex.quote(str(s))}" for s in sources)])
    if wrong:
        return f"; your file was left alone. Get the right file and run {again}."
    return f": delete it and download it again, then run {again}."


def _forget_damaged(item: Item, state: State, checked: tuple[FileSpec, Digests] | None) -> bool:
    """Forget the first-use record of a damaged file if it vouches for exactly these bytes; True if forgotten."""
    if checked is None:
        return False
    spec, digests = checked
    recorded = state.recorded(item.name, spec.name) if spec.sha256 is None else None
    if recorded is None or recorded.get("sha256") != digests.sha256:
        return False
    return bool(state.forget(item.name, spec.name))


def _fetch_weights(item: Item, cache: Path, sources: list[Path], force: bool, net: dict, log: Log) -> Path:
    spec = item.files[0]
    dest = weights_target(item, cache)
    state = State(cache)
    if sources:
        if len(sources) != 1 or not sources[0].is_file():
            raise UsageError(f"{item.name}: --from takes one weights file ({spec.name})")
        install_copy(sources[0], spec, dest, item=item.name, state=state, progress=net["progress"], log=log)
        log(f"{item.name}: copied and verified -> {dest}")
        return dest
    if not force and _verify_in_place(dest, spec, item, state, net["progress"], log) is not None:
        log(f"{item.name}: already in place and verified: {dest}")
        return dest
    download(spec, dest, item=item.name, state=state, command=command_for(item.name, cache), log=log, **net)
    log(f"{item.name}: downloaded and verified -> {dest}")
    return dest


def _wanted_images(subset: int | None, imagenet_total: int) -> int:
    return imagenet_total if subset is None else min(subset, imagenet_total)


def _prepared_subset(marker: dict, imagenet_total: int) -> int | None:
    """How many images an ``imagenet-val`` marker says were extracted from ``imagenet_total`` ids, or None."""
    have = marker.get("subset")
    if not isinstance(have, int) or isinstance(have, bool):
        return None
    total = marker.get("total")  # absent in markers written before it was recorded (always 50,000 then)
    if total is not None and total != imagenet_total:
        return None
    return have


def _already_prepared(
    item: Item, folder: Path, subset: int | None, exact_subset: bool, imagenet_total: int
) -> dict | None:
    """The marker of ``folder`` when it is complete and holds what was asked for, else None.

    ``imagenet-val``: the same number of images, or (unless ``exact_subset``) more: subsets are nested, every
    ``imagenet_subset_ids(n)`` being the first ``n`` ids of one ranking, so a larger one holds the smaller.
    """
    marker = read_marker(folder)
    if marker is None or check_folder(folder) is not None:
        return None
    if item.prepare == "imagenet-val":
        wanted = _wanted_images(subset, imagenet_total)
        have = _prepared_subset(marker, imagenet_total)
        if have is None or have < wanted or (exact_subset and have != wanted):
            return None
    return marker


def _is_users_folder(folder: Path) -> bool:
    """True when something that data_download did not prepare is at ``folder``: a non-empty folder without
    ``.complete.json`` (the library reads such a folder as the user's own copy), a link or a file."""
    if folder.is_symlink():
        return True
    if not folder.exists():
        return False
    if not folder.is_dir():
        return True
    return not (folder / MARKER).exists() and any(folder.iterdir())


def _users_folder_error(item: Item, cache: Path, folder: Path, sources: list[Path]) -> DataDownloadError:
    again = " ".join([command_for(item.name, cache), *(f"--from {shlex.quote(str(s))}" for s in sources)])
    return DataDownloadError(
        f"{folder} already exists and was not prepared by data_download (it has no {MARKER}): your own copy? It "
        f"was left alone. Move it elsewhere, or run {again} --force to have it moved to "
        f"{folder.name}.user-backup-<date> beside it and {item.name} prepared in its place."
    )


def _make_room(item: Item, folder: Path, log: Log) -> None:
    """Move the user's own folder at ``folder`` (``_is_users_folder``) to ``<folder>.user-backup-<date>``."""
    if not _is_users_folder(folder):
        return
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = folder.with_name(f"{folder.name}.user-backup-{stamp}")
    n = 1
    while backup.exists() or backup.is_symlink():
        n += 1
        backup = folder.with_name(f"{folder.name}.user-backup-{stamp}-{n}")
    os.replace(folder, backup)
    log(f"{item.name}: {folder} was not prepared by data_download (no {MARKER}); it was moved to {backup}")


def _fetch_dataset(
    item: Item,
    cache: Path,
    sources: list[Path],
    subset: int | None,
    exact_subset: bool,
    force: bool,
    refetch: bool,
    keep_archive: bool,
    net: dict,
    imagenet_total: int,
    log: Log,
) -> Path:
    """Prepare data set ``item``; ``refetch``: download its archive again even if one is in the downloads folder."""
    folder = dataset_folder(item, cache)
    state = State(cache)
    with state.lock(_item_lock(item, cache)):
        if not force and _is_users_folder(folder):
            raise _users_folder_error(item, cache, folder, sources)
        marker = (
            None
            if force or sources
            else _already_prepared(item, folder, subset, exact_subset, imagenet_total)
        )
        if marker is not None:
            log(f"{item.name}: already prepared in {folder}: {describe_marker(marker)}")
            return folder
        if item.prepare == "imagenet-val":
            _prepare_imagenet_from(
                item, cache, folder, sources, subset, exact_subset, imagenet_total, state, net, log
            )
            return folder
        spec = item.files[0]
        remove_after = False
        ours: Path | None = None
        checked: Checked = {}
        if sources:
            if len(sources) != 1:
                raise UsageError(f"{item.name}: --from takes one archive or folder")
            archive = sources[0]
            if archive.is_file() and archive.name == spec.name:
                digests = verify_file(
                    archive, spec, item=item.name, state=state, origin=f"your copy {archive}",
                    progress=net["progress"], use_stamp=True, log=log,
                )  # fmt: skip
                checked[archive.resolve()] = (spec, digests)
            else:
                log(f"{item.name}: {archive} is not the manifest's {spec.name}; its checksum is not checked")
        else:
            archive = ours = downloads_dir(cache) / spec.name
            digests = None
            if not refetch:
                digests = _verify_in_place(archive, spec, item, state, net["progress"], log)
            if digests is not None:
                log(f"{item.name}: using {archive} (verified)")
            else:
                digests = download(
                    spec,
                    archive,
                    item=item.name,
                    state=state,
                    command=command_for(item.name, cache),
                    log=log,
                    **net,
                )
            checked[archive.resolve()] = (spec, digests)
            remove_after = not keep_archive
        if archive.is_file():  # the images do not compress: the folder needs about the archive's size
            free = shutil.disk_usage(_existing_parent(folder)).free
            if free < archive.stat().st_size:
                raise DataDownloadError(
                    f"not enough disk space to prepare {item.name}: about {human_size(archive.stat().st_size)} "
                    f"needed, {human_size(free)} free in {folder.parent}. Free some space or choose another "
                    "cache folder (--cache DIR)."
                )
        _make_room(item, folder, log)
        with _on_damaged_archive(item, cache, state, checked, sources, ours):
            _PREPARERS[str(item.prepare)](
                archive, folder, item=item.name, expected_images=item.images, log=log
            )
        if remove_after:
            archive.unlink(missing_ok=True)
            log(f"{item.name}: removed the archive {archive} (--keep-archive keeps it)")
        return folder


def _existing_parent(path: Path) -> Path:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _prepare_imagenet_from(
    item: Item,
    cache: Path,
    folder: Path,
    sources: list[Path],
    subset: int | None,
    exact_subset: bool,
    total: int,
    state: State,
    net: dict,
    log: Log,
) -> None:
    if not sources:
        marker = read_marker(folder)
        have = (
            _prepared_subset(marker, total) if marker is not None and check_folder(folder) is None else None
        )
        wanted = _wanted_images(subset, total)
        if have is not None and have != wanted:  # (the same number: --force, which needs the files again)
            ask = "all" if subset is None else str(subset)
            asked = f"--subset {ask}" if exact_subset else "the default"
            raise ManualStepRequired(
                f"{item.name} is prepared in {folder} with {have:,} images, not the {wanted:,} asked for ({asked}). "
                f"Extracting another subset needs your copy of the images again (the ImageNet licence forbids "
                f"downloading it for you): {command_for(item.name, cache)} --subset {ask} --from "
                "ILSVRC2012_img_val.tar --from ILSVRC2012_bbox_val_v3.tgz (the paths of your files)."
            )
        raise ManualStepRequired(imagenet_instructions(item, cache))
    images: Path | None = None
    annotations: Path | None = None
    known = [f.name for f in item.files]
    checked: Checked = {}
    for src in sources:
        if src.is_dir():
            kaggle = src / "ILSVRC" / "Data" / "CLS-LOC" / "val"
            if kaggle.is_dir():
                images = kaggle
                if (src / "LOC_val_solution.csv").is_file() and annotations is None:
                    annotations = src / "LOC_val_solution.csv"
            elif next(src.glob("ILSVRC2012_val_*.JPEG"), None) is not None:
                images = src
            elif next(src.rglob("ILSVRC2012_val_*.xml"), None) is not None:
                annotations = src
            else:
                raise UsageError(
                    f"--from {src}: a folder must hold ILSVRC2012_val_*.JPEG images, their XML annotations, "
                    "or Kaggle's ILSVRC/Data/CLS-LOC/val"
                )
            continue
        if src.name not in known:
            raise UsageError(f"--from {src}: {item.name} takes one of these files: {', '.join(known)}")
        spec = item.file(src.name)
        digests = verify_file(
            src, spec, item=item.name, state=state, origin=f"your copy {src}", progress=net["progress"],
            use_stamp=True, log=log,
        )  # fmt: skip
        checked[src.resolve()] = (spec, digests)
        log(f"{item.name}: {src} verified")
        if spec.role == "images":
            images = src
        else:
            annotations = src
    if images is None:
        raise ManualStepRequired(
            f"{item.name}: no validation images among --from; add --from ILSVRC2012_img_val.tar (or "
            f"val_images.tar.gz, or a folder of ILSVRC2012_val_*.JPEG).\n{imagenet_instructions(item, cache)}"
        )
    _make_room(item, folder, log)
    with _on_damaged_archive(item, cache, state, checked, sources, None):
        prepare_imagenet_val(
            images, folder, annotations=annotations, subset=subset, total=total, item=item.name, log=log
        )


# ----------------------------------------------------------------------------------------------------------------
# Status and LIST


@dataclass(frozen=True)
class ItemStatus:
    """What the cache holds for one item: ``state`` is a word, ``detail`` the sentence LIST prints."""

    name: str
    state: str  # "verified", "ready", "unverified", "partial", "damaged", "missing", "corrupt"
    detail: str
    path: Path


def partial_downloads(item: Item, cache: Path) -> list[Path]:
    """The partial downloads (``.part``) of ``item`` in ``cache`` that the same command would resume."""
    if item.kind == "weights":
        targets = [weights_target(item, cache)]
    else:
        targets = [downloads_dir(cache) / spec.name for spec in item.files]
    parts = [t.with_name(t.name + ".part") for t in targets]
    return [p for p in parts if p.is_file()]


def item_status(item: Item, cache: Path, *, deep: bool = False) -> ItemStatus:
    """The state of ``item`` in ``cache``. Fast by default (verified stamps); ``deep`` re-hashes everything, and
    then writes as a fetch does: the weights' stamp, and the checksum of a file with none published and none
    recorded yet (first use)."""
    state = State(cache)
    if item.kind == "weights":
        spec = item.files[0]
        path = weights_target(item, cache)
        part = path.with_name(path.name + ".part")
        if path.is_file():
            if deep:
                try:
                    verify_file(
                        path, spec, item=item.name, state=state, origin=f"found at {path}", progress=False
                    )
                except ChecksumError as e:
                    return ItemStatus(item.name, "corrupt", f"DOES NOT MATCH: {e}", path)
            entry = state.stamped(path, spec, item.name)
            if entry is not None:
                return ItemStatus(
                    item.name, "verified", f"verified ({entry['verified_at'][:10]}): {path}", path
                )
            return ItemStatus(
                item.name,
                "unverified",
                f"present, not verified yet: run {command_for(item.name, cache)}",
                path,
            )
        if part.is_file():
            size = f" of {human_size(spec.size)}" if spec.size else ""
            return ItemStatus(
                item.name, "partial",
                f"partial download ({human_size(part.stat().st_size)}{size}): run "
                f"{command_for(item.name, cache)} to resume", part,
            )  # fmt: skip
        return ItemStatus(item.name, "missing", f"not in the cache (would go to {path})", path)
    folder = dataset_folder(item, cache)
    marker = read_marker(folder)
    if marker is None and (folder / MARKER).exists():
        return ItemStatus(
            item.name, "damaged",
            f"damaged (its record of the files, {MARKER}, cannot be read): run {command_for(item.name, cache)} "
            "--force", folder,
        )  # fmt: skip
    if marker is not None:
        problem = check_folder(folder, deep=deep)
        if problem is None:
            return ItemStatus(item.name, "ready", f"ready: {describe_marker(marker)} in {folder}", folder)
        return ItemStatus(
            item.name, "damaged", f"damaged ({problem}): run {command_for(item.name, cache)} --force", folder
        )
    for spec in item.files:
        archive = downloads_dir(cache) / spec.name
        part = archive.with_name(archive.name + ".part")
        if archive.is_file():
            return ItemStatus(
                item.name, "unverified", f"archive downloaded, not prepared: run {command_for(item.name, cache)}",
                archive,
            )  # fmt: skip
        if part.is_file():
            return ItemStatus(
                item.name, "partial",
                f"partial download ({human_size(part.stat().st_size)}): run {command_for(item.name, cache)} to resume",
                part,
            )  # fmt: skip
    if item.manual:
        return ItemStatus(
            item.name,
            "missing",
            f"not prepared; needs your own copy: {command_for(item.name, cache)} says how",
            folder,
        )
    return ItemStatus(item.name, "missing", f"not in the cache (would go to {folder})", folder)


def _item_size(item: Item) -> str:
    spec = next((f for f in item.files if f.role in (None, "images")), item.files[0])
    if spec.size is not None:
        return human_size(spec.size)
    if spec.approx_size is not None:
        return "~" + human_size(spec.approx_size)
    return "size unknown"


def _item_from(item: Item) -> str:
    urls = [u for f in item.files for u in f.urls]
    if not urls:
        return item.source
    text = item.source + "\n" + "\n".join(f"  {u}" for u in urls)
    if not all(f.url_confirmed for f in item.files):
        text += "\n  (this URL is NOT confirmed: if it fails, download the file by hand and use --from PATH)"
    return text


def format_list(manifest: Manifest | None = None, cache: Path | None = None, *, deep: bool = False) -> str:
    """The LIST text: every item with size, licence, source, checksum and its state in the cache."""
    manifest = manifest or load_manifest()
    cache = Path(cache) if cache is not None else default_cache()
    lines = [
        f"Cache folder: {cache}  (set by $OPTICAM_CACHE or --cache)",
        f"Manifest: {manifest.path or '(given)'}",
        "",
    ]
    state = State(cache)
    for item in manifest.items.values():
        status = item_status(item, cache, deep=deep)
        lines.append(f"{item.name}  [{item.kind}]  {_item_size(item)}  -- {status.state.upper()}")
        lines.append(f"    {item.title}")
        lines.append(f"    licence : {item.licence}")
        from_lines = _item_from(item).splitlines()
        lines.append(f"    from    : {from_lines[0]}")
        lines.extend(f"              {line.strip()}" for line in from_lines[1:])
        for spec in item.files:
            check = spec.describe_checksum()
            recorded = state.recorded(item.name, spec.name) if spec.sha256 is None else None
            if recorded:
                check += f"; recorded {recorded['sha256'][:12]}… on {recorded['recorded_at'][:10]}"
            prefix = f"{spec.name}: " if len(item.files) > 1 or item.kind == "dataset" else ""
            lines.append(f"    checksum: {prefix}{check}")
        lines.append(f"    status  : {status.detail}")
        lines.append("")
    lines.append("Fetch with: python -m data_download NAME [NAME ...]   (python -m data_download --help)")
    return "\n".join(lines)
