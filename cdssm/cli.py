"""The ``cdssm`` command (also ``python -m cdssm``): one entry point, one subcommand per job.

A subcommand is a function ``_add_<name>(commands)`` that adds its parser to ``build_parser``'s
subparsers and sets ``handler``: a function of the parsed arguments returning the exit status.
Handlers import their modules when they run, so ``--help`` and every command load only what
they use. A ValueError from a handler is an argument value it rejected (every public function
of the package raises ValueError naming the argument): it becomes a usage error (status 2).
"""

import argparse
import sys
from typing import Optional, Sequence

DESCRIPTION = """\
cdssm: the Cayley-Delta State Space Model, an attention-free causal language model whose
blocks run an exact chunked complex delta-rule scan, plus a Transformer baseline with the same
interface. Run `cdssm COMMAND --help` for the options of a command."""

EPILOG = """\
examples:
  cdssm demo                        tiny CD-SSM on CPU: forward/backward, then generation
  cdssm demo --arch transformer     the same with the Transformer baseline"""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo", help="tiny CPU model: one forward/backward step, then generation",
        description="Builds a tiny model on CPU with random weights, runs one forward/backward "
                    "step on random tokens (prints the parameter counts, loss, gradient norm and "
                    "time) and generates a few tokens after a prompt, streamed as they come. The "
                    "prompt uses the GPT-2 tokenizer when tiktoken can load it (it needs its "
                    "cached files or the network), else its UTF-8 bytes as token ids. Takes a "
                    "few seconds; the weights are untrained, so the text means nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=("cdssm", "transformer"), default="cdssm",
                       help="architecture")
    model.add_argument("--d-model", type=_int_at_least(1), default=128,
                       help="residual width d (a multiple of 32 for cdssm, 64 for transformer)")
    model.add_argument("--n-layers", type=_int_at_least(1), default=2, help="blocks")
    model.add_argument("--context-length", type=_int_at_least(2), default=256,
                       help="training context Lc")
    model.add_argument("--vocab-size", type=_int_at_least(256), default=50257,
                       help="vocabulary V (GPT-2's 50257 to use its tokenizer)")
    step = parser.add_argument_group("forward/backward step")
    step.add_argument("--batch-size", type=_int_at_least(1), default=4, help="sequences")
    step.add_argument("--seq-len", type=_int_at_least(1), default=128,
                      help="tokens per sequence (at most --context-length)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompt", default="The state of the art in language modelling is",
                     help="text to continue")
    gen.add_argument("--max-new-tokens", type=_int_at_least(0), default=24, help="tokens")
    gen.add_argument("--temperature", type=_nonnegative_float, default=0.8,
                     help="sampling temperature (0 = greedy)")
    gen.add_argument("--top-k", type=_int_at_least(1), default=50,
                     help="sample from the k most likely tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data and sampling")
    parser.set_defaults(handler=_demo, parser=parser)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(arch=args.arch, d_model=args.d_model, n_layers=args.n_layers,
        context_length=args.context_length, vocab_size=args.vocab_size,
        batch_size=args.batch_size, seq_len=args.seq_len, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        seed=args.seed, out=sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdssm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     required=True)
    _add_demo(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses ``argv`` (default: the command line), runs the subcommand, returns its status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        args.parser.error(str(error))
