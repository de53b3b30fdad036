"""``python -m data_download``: the command line. ``main(argv)`` returns the exit status (0 or 1); bad arguments
exit with status 2 (argparse's ``SystemExit``)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .core import default_cache, fetch_item, format_list, partial_downloads
from .errors import DataDownloadError, ManifestError, UsageError
from .fetch import DEFAULT_TIMEOUT
from .manifest import Manifest, load_manifest

PROG = "python -m data_download"

DESCRIPTION = """\
Fetch what the Opti-CAM course cannot ship -- pretrained weights and data sets -- into the cache folder the
library reads, checked against the checksums in data_download/manifest.json.

  python -m data_download LIST                 every item: size, licence, source, and whether it is already
                                               in the cache and verified
  python -m data_download resnet50 vgg16_bn    download items (here the paper's two CNNs, about 630 MiB)

The cache folder is $OPTICAM_CACHE (default $XDG_CACHE_HOME/opticam, else ~/.cache/opticam); --cache DIR uses
another one (then set OPTICAM_CACHE=DIR so the library finds the files). Weights go exactly where
load_classifier looks for them; data sets go to <cache>/datasets/<name>/ with their labels and splits.
"""

EPILOG = """\
items (details: LIST):
  resnet50, vgg16_bn       torchvision ImageNet weights (the paper's CNNs)
  vit_b_16, deit_b_16      timm ImageNet weights from the Hugging Face Hub (the paper's transformers)
  imagenette               10 ImageNet classes from fastai; only its val split is kept (3,925 images)
  imagenet-val             ILSVRC2012 validation: cannot be downloaded (licence); bring your own copy:
                             %(prog)s imagenet-val --from ILSVRC2012_img_val.tar --from ILSVRC2012_bbox_val_v3.tgz
                           Hugging Face route: accept the terms of the gated data set ILSVRC/imagenet-1k, put your
                           own token in the environment variable HF_TOKEN, then
                             hf download ILSVRC/imagenet-1k data/val_images.tar.gz --repo-type dataset --local-dir D
                             %(prog)s imagenet-val --from D/data/val_images.tar.gz
                           Only a 1,000-image subset (the paper's sample size) is extracted unless --subset N / --subset all.
  chest-xray, kvasir       the medical data sets of the paper's appendix E, split into train/val/test

downloads:
  Progress is shown; an interrupted download resumes where it stopped (run the same command again). Every
  downloaded file is checked (size, SHA-256 or MD5) before it is put in place; a bad download is deleted. A file
  with no published checksum has its SHA-256 recorded on first download, and later copies are checked against it.
  A file given with --from is checked the same way when it has the manifest's file name (weights always); a
  --from folder, or an archive under another name, cannot be checked against the manifest and is used as it is
  (the command says so).

no network?
  The command fails within seconds and prints the URL and the exact path: download the file elsewhere, copy it
  to that path, and run the same command again to verify it. Or pass the file: %(prog)s NAME --from PATH.

exit status: 0 done, 1 a download or check failed, 2 bad arguments.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: --subset when it is not given (the paper's ablation size)
DEFAULT_SUBSET = 1000
#: the longest --timeout accepted, in seconds
MAX_TIMEOUT = 3600.0


def _subset(text: str) -> int | str:
    """``"all"`` or a positive number of images (``--subset``)."""
    if text.lower() == "all":
        return "all"
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'all', got {text!r}")
    return int(text)


def _positive(text: str) -> float:
    """A finite number of seconds in (0, ``MAX_TIMEOUT``] (``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_TIMEOUT:g}, got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its --help is the user documentation)."""
    p = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="LIST | NAME", help="LIST, or the items to fetch")
    p.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="cache folder (default: $OPTICAM_CACHE, else $XDG_CACHE_HOME/opticam, else ~/.cache/opticam)",
    )
    p.add_argument(
        "--from",
        dest="sources",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="use your own file or folder instead of downloading (repeatable; with exactly one item)",
    )
    p.add_argument(
        "--subset",
        type=_subset,
        default=None,
        metavar="N|all",
        help=f"imagenet-val: how many validation images to extract (default {DEFAULT_SUBSET}, the paper's "
        "ablation size; without --subset a folder already prepared with more images is kept, as it holds them)",
    )
    p.add_argument(
        "--keep-archive",
        action="store_true",
        help="keep a downloaded data set archive after extracting it (your own --from files are never removed)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="fetch and prepare again even if already in the cache (a data set folder that data_download did not "
        "prepare is moved to NAME.user-backup-<date>, never deleted)",
    )
    p.add_argument(
        "--forget-recorded",
        action="store_true",
        help="drop the checksums recorded on first use for the named items (files with no published checksum), "
        "then fetch them again (implies --force): for a file that legitimately changed upstream",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="with LIST: re-hash every file instead of trusting stamps (it updates the stamps, and a file with no "
        "published checksum and none recorded yet has its checksum recorded, as on first use)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help=f"give up on a silent server after this long (default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--manifest", type=Path, metavar="FILE", help="use another manifest (mirrors, tests)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace, manifest: Manifest) -> list[str]:
    """The names to act on (``["LIST"]`` for the listing); ``p.error`` (exit 2) for an option that would be
    ignored with them, so that nothing given on the command line is silently dropped."""
    names = list(args.names)
    listing = [n for n in names if n.upper() == "LIST"]
    if listing and len(names) > 1:
        p.error("LIST takes no item names")
    if listing or not names:
        given = [
            flag
            for flag, used in (
                ("--from", bool(args.sources)),
                ("--subset", args.subset is not None),
                ("--force", args.force),
                ("--keep-archive", args.keep_archive),
                ("--forget-recorded", args.forget_recorded),
                ("--timeout", args.timeout is not None),
            )
            if used
        ]
        if given:
            p.error(f"LIST takes no {', '.join(given)} (those go with item names)")
        return ["LIST"]
    if args.verify:
        p.error("--verify goes with LIST (fetching always verifies)")
    unknown = [n for n in names if n not in manifest.items]
    if unknown:
        p.error(f"unknown item {unknown[0]!r}; known items: {', '.join(manifest.items)}")
    if args.sources and len(names) != 1:
        p.error("--from goes with exactly one item")
    for src in args.sources:
        if not src.expanduser().exists():
            p.error(f"--from {src}: no such file or folder")
    items = [manifest.items[n] for n in names]
    if args.subset is not None and not any(i.prepare == "imagenet-val" for i in items):
        p.error("--subset applies to imagenet-val only")
    if args.keep_archive:
        if args.sources:
            p.error("--keep-archive does nothing with --from: your own files are never removed")
        if not any(i.kind == "dataset" and not i.manual for i in items):
            p.error("--keep-archive applies only to data sets that are downloaded (their archive)")
    return names


def _os_error(e: OSError, cache: Path, partial: Sequence[Path] = ()) -> str:
    """One line for an ``OSError``; ``partial``: the partial downloads kept (said to be resumed)."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    if partial:
        tail = f"; the partial download {partial[0]} is kept and the same command resumes it."
    else:
        tail = "."
    return (
        f"{e.strerror or e}{where}. Check that the cache folder {cache} is writable and has free space, or choose "
        f"another with --cache DIR{tail}"
    )


def _partial(manifest: Manifest, name: str, cache: Path) -> list[Path]:
    try:
        return partial_downloads(manifest.get(name), cache)
    except OSError:
        return []


def _quiet_broken_pipe() -> None:
    """The reader of our output went away (``LIST | head``): send what is left to /dev/null, say nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns 0 (done) or 1 (a fetch or check failed). Bad arguments raise ``SystemExit(2)``
    (argparse), as an unknown item does."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as e:
        p.error(str(e))
    names = _check_args(p, args, manifest)
    cache = args.cache.expanduser() if args.cache else default_cache()
    if names == ["LIST"]:
        try:
            text = format_list(manifest, cache, deep=args.verify)
        except OSError as e:
            print(f"{PROG}: LIST: {_os_error(e, cache)}", file=sys.stderr)
            return 1
        try:
            print(text)
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        return 0
    subset = DEFAULT_SUBSET if args.subset is None else None if args.subset == "all" else int(args.subset)
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    failed = 0
    for name in names:
        try:
            fetch_item(
                name,
                manifest=manifest,
                cache=cache,
                sources=args.sources,
                subset=subset,
                exact_subset=args.subset is not None,
                force=args.force,
                keep_archive=args.keep_archive,
                timeout=timeout,
                progress=not args.quiet,
                forget_recorded=args.forget_recorded,
            )
        except UsageError as e:
            p.error(str(e))
        except DataDownloadError as e:
            failed += 1
            print(f"{PROG}: {name}: {e}", file=sys.stderr)
        except OSError as e:  # an unwritable cache, a full disk: one line, not a traceback
            failed += 1
            print(f"{PROG}: {name}: {_os_error(e, cache, _partial(manifest, name, cache))}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"\n{PROG}: interrupted; run the same command again to resume.", file=sys.stderr)
            return 130
    if not failed and args.cache and cache != default_cache():
        print(
            f"Files are in {cache}: set OPTICAM_CACHE={shlex.quote(str(cache))} so that the library finds them.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
