"""Fetch what the course cannot ship: pretrained weights and data sets, checked against one manifest.

Command line: ``python -m data_download LIST`` and ``python -m data_download NAME ...`` (``--help``).

From Python (the notebooks, the tests)::

    from data_download import fetch_item, format_list, load_manifest
    print(format_list())                       # what exists and what is in the cache
    path = fetch_item("resnet50")              # download, verify, put at opticam_lib.models.weights_path

Files go to the cache folder of ``opticam_lib.paths`` (``$OPTICAM_CACHE``, default ``$XDG_CACHE_HOME/opticam``,
else ``~/.cache/opticam``): weights where ``opticam_lib.models.weights_path`` expects them, data sets under
``opticam_lib.paths.datasets_dir()``. Downloads resume, are verified before they are put in place, and fail fast
without a network with a message that says how to copy the file in by hand. The manifest and the cache folder can be injected (``manifest=``,
``cache=``).
"""

from __future__ import annotations

from .core import (
    ItemStatus,
    command_for,
    dataset_folder,
    downloads_dir,
    fetch_item,
    format_list,
    item_status,
    weights_target,
)
from .datasets import imagenet_classes, imagenet_subset_ids, rank_key
from .errors import (
    ChecksumError,
    DamagedArchiveError,
    DataDownloadError,
    FileFormatError,
    HTTPDownloadError,
    ManifestError,
    ManualStepRequired,
    OfflineError,
    UsageError,
    WrongArchiveError,
)
from .fetch import Digests, State, download, format_problem, hash_file, verify_file
from .manifest import DEFAULT_MANIFEST, FileSpec, Item, Manifest, load_manifest, parse_manifest

__all__ = [
    "DEFAULT_MANIFEST",
    "ChecksumError",
    "DamagedArchiveError",
    "DataDownloadError",
    "Digests",
    "FileFormatError",
    "FileSpec",
    "HTTPDownloadError",
    "Item",
    "ItemStatus",
    "Manifest",
    "ManifestError",
    "ManualStepRequired",
    "OfflineError",
    "State",
    "UsageError",
    "WrongArchiveError",
    "command_for",
    "dataset_folder",
    "download",
    "downloads_dir",
    "fetch_item",
    "format_list",
    "format_problem",
    "hash_file",
    "imagenet_classes",
    "imagenet_subset_ids",
    "item_status",
    "load_manifest",
    "parse_manifest",
    "rank_key",
    "verify_file",
    "weights_target",
]
