"""``python -m data_download``: the command line. ``main(argv)`` returns the exit status (0 or 1); bad arguments
exit with status 2 (argparse's ``SystemExit``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .core import default_cache, fetch_item, format_list
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

The cache folder is $OPTICAM_CACHE (default ~/.cache/opticam); --cache DIR uses another one (then set
OPTICAM_CACHE=DIR so the library finds the files). Weights go exactly where load_classifier looks for them;
data sets go to <cache>/datasets/<name>/ with their labels and splits.
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
                           Only the paper's 1,000-image subset is extracted unless --subset N / --subset all.
  chest-xray, kvasir       the medical data sets of the paper's appendix E, split into train/val/test

downloads:
  Progress is shown; an interrupted download resumes where it stopped (run the same command again). Every file
  is checked (size, SHA-256 or MD5) before it is put in place; a bad download is deleted. A file with no
  published checksum has its SHA-256 recorded on first download, and later copies are checked against it.

no network?
  The command fails within seconds and prints the URL and the exact path: download the file elsewhere, copy it
  to that path, and run the same command again to verify it. Or pass the file: %(prog)s NAME --from PATH.

exit status: 0 done, 1 a download or check failed, 2 bad arguments.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _subset(text: str) -> int | None:
    if text.lower() == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'all', got {text!r}")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
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
        "--cache", type=Path, metavar="DIR", help="cache folder (default: $OPTICAM_CACHE or ~/.cache/opticam)"
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
        default=1000,
        metavar="N|all",
        help="imagenet-val: how many validation images to extract (default 1000, the paper's ablation size)",
    )
    p.add_argument(
        "--keep-archive", action="store_true", help="keep a data set's archive after extracting it"
    )
    p.add_argument(
        "--force", action="store_true", help="fetch and prepare again even if already in the cache"
    )
    p.add_argument(
        "--forget-recorded",
        action="store_true",
        help="drop the checksums recorded on first use for the named items (files with no published checksum), "
        "then fetch: for a file that legitimately changed upstream",
    )
    p.add_argument(
        "--verify", action="store_true", help="with LIST: re-hash every file instead of trusting stamps"
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a silent server after this long (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--manifest", type=Path, metavar="FILE", help="use another manifest (mirrors, tests)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace, manifest: Manifest) -> list[str]:
    names = list(args.names)
    listing = [n for n in names if n.upper() == "LIST"]
    if listing and len(names) > 1:
        p.error("LIST takes no item names")
    if listing:
        return ["LIST"]
    unknown = [n for n in names if n not in manifest.items]
    if unknown:
        p.error(f"unknown item {unknown[0]!r}; known items: {', '.join(manifest.items)}")
    if args.sources and len(names) != 1:
        p.error("--from goes with exactly one item")
    for src in args.sources:
        if not src.expanduser().exists():
            p.error(f"--from {src}: no such file or folder")
    if args.subset != 1000 and "imagenet-val" not in names:
        p.error("--subset applies to imagenet-val only")
    return names


def _os_error(e: OSError, cache: Path) -> str:
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return (
        f"{e.strerror or e}{where}. Check that the cache folder {cache} is writable and has free space, or choose "
        "another with --cache DIR; a partial download stays where it is and the same command resumes it."
    )


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
    if not names or names == ["LIST"]:
        try:
            print(format_list(manifest, cache, deep=args.verify))
        except OSError as e:
            print(f"{PROG}: LIST: {_os_error(e, cache)}", file=sys.stderr)
            return 1
        return 0
    failed = 0
    for name in names:
        try:
            fetch_item(
                name,
                manifest=manifest,
                cache=cache,
                sources=args.sources,
                subset=args.subset,
                force=args.force,
                keep_archive=args.keep_archive,
                timeout=args.timeout,
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
            print(f"{PROG}: {name}: {_os_error(e, cache)}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"\n{PROG}: interrupted; run the same command again to resume.", file=sys.stderr)
            return 130
    if not failed and args.cache and cache != default_cache():
        print(
            f"Files are in {cache}: set OPTICAM_CACHE={cache} so that the library finds them.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
