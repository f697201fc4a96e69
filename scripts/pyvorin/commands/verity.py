"""pyvorin verity check IMAGE"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import verity
from ..errors import PyvorinError

HELP = "check a dm-verity image against its root hash, as the kernel will"
DESCRIPTION = """\
Recompute the dm-verity hash tree of an image (data, then at the hash offset
the superblock and the tree, as 'veritysetup format' and meta-security's
dm-verity-img class write it) and check every stored tree block and the root
hash: what the device's kernel will read, checked before it ships. One pass,
memory bounded by one hash block per tree level.

  pyvorin verity check rootfs.ext4.verity --params rootfs.ext4.verity.env
  pyvorin verity check rootfs.ext4.verity --root-hash HEX --hash-offset BYTES

Exit 0 when the image holds, 1 when it does not (the first block that
differs is named), 2 on bad input.
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("verity", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verity_command", metavar="{check}", required=True)
    check = sub.add_parser("check", help="recompute the tree and hold it to the root hash",
                           description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("image", type=Path, metavar="IMAGE")
    check.add_argument("--params", type=Path, metavar="FILE",
                       help="the dm-verity-img parameters (ROOT_HASH, DATA_SIZE lines)")
    check.add_argument("--root-hash", metavar="HEX", help="the expected root hash (instead of --params)")
    check.add_argument("--hash-offset", type=int, metavar="BYTES",
                       help="where the superblock starts: the data size (instead of --params)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    if args.params is not None:
        if args.root_hash is not None or args.hash_offset is not None:
            raise PyvorinError("--params or --root-hash with --hash-offset, not both")
        root_hash, offset = verity.read_params(args.params)
    elif args.root_hash is None or args.hash_offset is None:
        raise PyvorinError("give --params FILE, or --root-hash and --hash-offset")
    else:
        root_hash, offset = args.root_hash, args.hash_offset
    if offset <= 0:
        raise PyvorinError(f"--hash-offset {offset}: must be the (positive) data size")
    checked = verity.check(args.image, root_hash, offset)
    sb = checked.superblock
    print(f"{args.image}: root hash {checked.root_hash} ok: {sb.data_blocks} data blocks of {sb.data_block_size} B, "
          f"{checked.tree_blocks} tree blocks in {checked.levels} levels, salt {sb.salt.hex() or '-'}")
    return 0
