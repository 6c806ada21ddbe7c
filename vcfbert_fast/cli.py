"""``vcfbert-fast`` command line: one subcommand per module, imported lazily.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("vcfbert_fast.info", "report torch/CUDA/Triton/FAISS/extension status and the live op paths"),
    "simulate": ("vcfbert_fast.simulate", "simulate a panel, targets and array sites with msprime"),
    "train": ("vcfbert_fast.train", "train a V18 model on a phased reference panel"),
    "impute": ("vcfbert_fast.impute", "impute a target VCF with a trained model"),
    "evaluate": ("vcfbert_fast.evaluate", "score imputed VCFs against truth by MAF bin"),
    "demo": ("vcfbert_fast.demo", "simulate, train, impute and evaluate end to end"),
}


class _OldName(argparse.Action):
    """A renamed flag's old spelling: still works, hidden from --help, and says the new name once."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = "--" + self.dest.replace("_", "-")
        print(f"note: {option_string} is now {new}; the old name still works", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_populations_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--populations FILE`` (sample -> population table); ``--panel``, its old name, kept as a hidden alias.

    Renamed because Beagle and minimac users read "panel" as the reference panel (``--ref`` here).
    """
    parser.add_argument("--populations", default=None, metavar="FILE", help=help_text)
    parser.add_argument(
        "--panel", dest="populations", action=_OldName, metavar="FILE", help=argparse.SUPPRESS
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that subcommand's module (fast start-up)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="vcfbert-fast", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vcfbert-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import VcfBertError

    argv = sys.argv[1:] if argv is None else argv
    # no subcommand named (--version, --help, a typo): build no subcommand's flags, import nothing heavy
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    args = build_parser(only).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except VcfBertError as exc:  # bad input: one line, no traceback
        print(f"vcfbert-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the writers have removed their partial files on the way out
        print(
            f"vcfbert-fast {args.command}: interrupted; no partial output is left (`train --resume` and a "
            "chunked `impute --resume` carry on from what finished)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
