"""pyvorin delta OLD NEW -o DELTA / pyvorin delta-apply DELTA --source --target"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import threading
from pathlib import Path

from ..delta import codec
from ..delta.apply import apply_delta
from ..delta.make import make_delta, terminal_progress
from ..errors import PyvorinError
from ..fsutil import atomic_output

HELP = "make a delta between two root file system images"
DESCRIPTION = """\
Make a delta that turns OLD (the image on the device's active slot) into NEW.

  pyvorin delta old.ext4 new.ext4 -o update.pyvd               # windowed (default)
  pyvorin delta old.ext4 new.ext4 -o update.bsdiff --format bsdiff   # plain BSDIFF40

windowed: unchanged, moved and all-zero 4 KiB blocks become copy/zero
operations; changed blocks are diffed in windows of at most 4 MiB against a
few MiB of the old image, by as many processes as --memory allows (default
1 GiB, whatever the image size).  --codec says how a window is encoded:
bsdiff+zstd (default) keeps the smaller of zstd --patch-from and bsdiff,
running bsdiff only where it can win; zstd alone is fastest; bsdiff alone is
the old behaviour (deltas older appliers read).  The device needs bspatch
and zstd.  The delta records the SHA-256 of OLD, of NEW and of itself;
'pyvorin delta-apply' (and the device) check all three.  bsdiff: one standard
BSDIFF40 patch that Debian's bspatch applies; it needs about 17x the image
size in memory, so it is limited to 64 MiB.
"""
APPLY_HELP = "apply a windowed delta (what the device runs)"
APPLY_DESCRIPTION = """\
Rebuild NEW on TARGET from the image on SOURCE, as the device does from its
active slot to its inactive one.  The delta's own hash and SOURCE's hash are
checked before anything is written; TARGET is read back and must hash to NEW.

  pyvorin delta-apply update.pyvd --source /dev/mmcblk0p2 --target /dev/mmcblk0p3
"""
PLAIN_LIMIT = 64 << 20
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_arg(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if text and text[-1] in UNITS:
            return int(float(text[:-1]) * UNITS[text[-1]])
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 1G)") from exc


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("delta", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, metavar="OLD")
    parser.add_argument("new", type=Path, metavar="NEW")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DELTA")
    parser.add_argument("--format", choices=["windowed", "bsdiff"], default="windowed")
    parser.add_argument("--codec", choices=sorted(codec.CODECS), default=codec.DEFAULT,
                        help=f"how a window is encoded (default {codec.DEFAULT})")
    parser.add_argument("--memory", type=size_arg, default=1 << 30, metavar="SIZE",
                        help="host memory budget for the windowed delta (default 1G)")
    parser.add_argument("--no-report", action="store_true",
                        help="skip the size report (it compresses NEW with zstd -3 for comparison)")
    parser.set_defaults(func=run)
    apply = subparsers.add_parser("delta-apply", help=APPLY_HELP, description=APPLY_DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    apply.add_argument("delta", type=Path, metavar="DELTA")
    apply.add_argument("--source", type=Path, required=True, help="device or file holding OLD (read only)")
    apply.add_argument("--target", type=Path, required=True, help="device or file to write NEW to")
    apply.add_argument("--workdir", type=Path, help="directory for one window's scratch files (default TMPDIR)")
    apply.set_defaults(func=run_apply)


def _plain(old: Path, new: Path, output: Path) -> int:
    bsdiff = codec.Bsdiff()
    bsdiff.check_host()
    for path in (old, new):
        if not path.is_file():
            raise PyvorinError(f"{path}: not found or not a file")
        if path.stat().st_size > PLAIN_LIMIT:
            raise PyvorinError(f"{path}: over 64 MiB; a plain bsdiff needs ~17x that in memory: use --format windowed")
    with atomic_output(output) as handle:
        handle.write(bsdiff.diff(old.read_bytes(), new.read_bytes()))
    return output.stat().st_size


# The report is a yardstick, not the product: at -12 it took 15 s of a 38 s
# run on the benchmark's 512 MiB image, at -3 it takes 1.5 s (and ~20 % more
# bytes, which flatters the delta by as much: the figure says which level).
REPORT_LEVEL = 3


class _ZstdSize:
    """Bytes of a file compressed with zstd, counted as they stream by, in the background.

    Started before the delta, it runs while the main process plans and the
    workers wait for windows, so the report costs the run almost nothing.
    One thread: ~60 MiB whatever the image size (-T0 at -19 took 316 MiB).
    """

    def __init__(self, path: Path) -> None:
        self.total: int | None = None
        self._source = open(path, "rb")  # noqa: SIM115 - closed in __exit__
        self._zstd = subprocess.Popen(["zstd", f"-{REPORT_LEVEL}", "--single-thread", "-q", "-c"],
                                      stdin=self._source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        assert self._zstd.stdout is not None
        total = 0
        while chunk := self._zstd.stdout.read(1 << 20):
            total += len(chunk)
        if self._zstd.wait() == 0:
            self.total = total

    def __enter__(self) -> _ZstdSize:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._zstd.kill()
        self._thread.join()
        self._source.close()


def run(args: argparse.Namespace) -> int:
    # A missing NEW is make_delta's to report, in its words.
    measure = (not args.no_report and shutil.which("zstd") is not None and args.new.exists()
               and not args.new.is_dir())
    with _ZstdSize(args.new) if measure else contextlib.nullcontext() as yardstick:
        if args.format == "bsdiff":
            size = _plain(args.old, args.new, args.output)
            new_size = args.new.stat().st_size
        else:
            report = make_delta(args.old, args.new, args.output, args.memory, terminal_progress, args.codec)
            size = report.delta_size
            print(f"windows diffed: {report.windows} ({report.patched_bytes} bytes) with {report.workers} workers; "
                  f"copied {report.copy_bytes}, zero {report.zero_bytes}")
            new_size = report.new_size
    print(f"wrote {args.output}: delta {size} bytes for a {new_size}-byte image "
          f"({100 * (1 - size / max(new_size, 1)):.1f}% smaller)")
    if yardstick is not None and yardstick.total:
        print(f"  full image with zstd -{REPORT_LEVEL}: {yardstick.total} bytes; the delta is "
              f"{100 * (1 - size / yardstick.total):.1f}% smaller than that")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    header = apply_delta(args.delta, args.source, args.target, args.workdir)
    print(f"{args.target}: patched {header.new_size} bytes, sha256 {header.new_sha256} verified")
    return 0
